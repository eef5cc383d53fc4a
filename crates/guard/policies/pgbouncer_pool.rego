# A PgBouncer max_client_conn cut from 200 to 20 can ship unnoticed in a long diff.
# Deny a max_client_conn below 80% of the baseline's, or below the number of
# connections the service fleet's pools can open.
package holdfast.policy.pgbouncer_pool

# PgBouncer's own default when the key is absent.
default_max_client_conn := 100

max_client_conn(f) := object.get(f.doc, ["pgbouncer", "max_client_conn"], default_max_client_conn)

deny contains d if {
	some f in input.files
	f.kind == "pgbouncer"
	f.baseline.kind == "pgbouncer"
	new := max_client_conn(f)
	old := max_client_conn(f.baseline)
	new < old * 0.8
	d := {
		"msg": sprintf("max_client_conn dropped from %v to %v, below 80%% of the baseline", [old, new]),
		"file": f.path,
		"path": "pgbouncer.max_client_conn",
		"baseline": old,
		"value": new,
	}
}

# Every pool of every holdfast.toml given, times the number of nodes.
pool_sizes contains [h.path, name, size] if {
	some h in input.files
	h.kind == "holdfast"
	some name, pool in h.doc.database.pools
	size := pool.max_connections
	is_number(size)
}

fleet_connections := sum([s | some [_, _, s] in pool_sizes]) * input.fleet_nodes

deny contains d if {
	count(pool_sizes) > 0
	some f in input.files
	f.kind == "pgbouncer"
	new := max_client_conn(f)
	new < fleet_connections
	d := {
		"msg": sprintf("max_client_conn %v is below the %v connections the service's pools can open (%v node(s))", [new, fleet_connections, input.fleet_nodes]),
		"file": f.path,
		"path": "pgbouncer.max_client_conn",
		"value": new,
	}
}
