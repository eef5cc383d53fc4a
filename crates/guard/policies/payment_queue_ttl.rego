# Payment work must never expire in a queue. It is retried and then
# dead-lettered, never dropped by a TTL or a retention period.
package holdfast.policy.payment_queue_ttl

payment_queue(r) if contains(lower(r.name), "payment")

payment_queue(r) if contains(lower(r.values.name), "payment")

deny contains d if {
	some f in input.files
	f.kind in {"terraform", "terraform_plan"}
	some r in f.resources
	r.type == "aws_sqs_queue"
	payment_queue(r)
	retention := r.values.message_retention_seconds
	retention != null
	d := {
		"msg": sprintf("payment queue %v sets message_retention_seconds = %v: messages expire instead of dead-lettering", [r.address, retention]),
		"file": f.path,
		"path": sprintf("%v.message_retention_seconds", [r.address]),
		"value": retention,
	}
}

# holdfast.toml: any key mentioning ttl/retention/expir under a queue whose
# path mentions payment, e.g. [queues.payment_retries] ttl_s = 3600.
deny contains d if {
	some f in input.files
	f.kind == "holdfast"
	walk(f.doc, [path, value])
	count(path) > 0
	keys := [lower(sprintf("%v", [p])) | some p in path]
	joined := concat(".", keys)
	contains(joined, "queue")
	contains(joined, "payment")
	last := keys[count(keys) - 1]
	ttl_key(last)
	value != null
	d := {
		"msg": sprintf("payment queue setting %v = %v: payment jobs must not expire", [joined, value]),
		"file": f.path,
		"path": joined,
		"value": value,
	}
}

ttl_key(k) if contains(k, "ttl")

ttl_key(k) if contains(k, "retention")

ttl_key(k) if contains(k, "expir")
