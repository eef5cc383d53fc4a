# Databases must be private and encrypted at rest.
package holdfast.policy.terraform_db

db_resource(r) if contains(r.type, "db")

db_resource(r) if contains(r.type, "rds")

db_resource(r) if contains(r.type, "database")

db_resource(r) if contains(r.type, "sql")

is_true(v) if v == true

is_true(v) if {
	is_string(v)
	lower(v) == "true"
}

is_false(v) if v == false

is_false(v) if {
	is_string(v)
	lower(v) == "false"
}

tf_files contains f if {
	some f in input.files
	f.kind in {"terraform", "terraform_plan"}
}

deny contains d if {
	some f in tf_files
	some r in f.resources
	db_resource(r)
	is_true(r.values.publicly_accessible)
	d := {
		"msg": sprintf("database %v is publicly accessible", [r.address]),
		"file": f.path,
		"path": sprintf("%v.publicly_accessible", [r.address]),
		"value": r.values.publicly_accessible,
	}
}

deny contains d if {
	some f in tf_files
	some r in f.resources
	db_resource(r)
	is_false(r.values.storage_encrypted)
	d := {
		"msg": sprintf("database %v is not encrypted at rest", [r.address]),
		"file": f.path,
		"path": sprintf("%v.storage_encrypted", [r.address]),
		"value": r.values.storage_encrypted,
	}
}
