# A typo in the database connection string can take checkout down while the
# database is fine. A connection string must parse, and its host must match the baseline's.
package holdfast.policy.connection_hosts

deny contains d if {
	some f in input.files
	some c in f.connections
	c.error
	d := {
		"msg": sprintf("connection string %v does not parse: %v", [c.key, c.error]),
		"file": f.path,
		"path": c.key,
	}
}

deny contains d if {
	some f in input.files
	some c in f.connections
	not c.error
	some b in f.baseline.connections
	b.key == c.key
	not b.error
	object.get(b, "host", "") != object.get(c, "host", "")
	d := {
		"msg": sprintf("database host of %v changed from %v to %v", [c.key, object.get(b, "host", "(none)"), object.get(c, "host", "(none)")]),
		"file": f.path,
		"path": c.key,
		"baseline": object.get(b, "host", null),
		"value": object.get(c, "host", null),
	}
}
