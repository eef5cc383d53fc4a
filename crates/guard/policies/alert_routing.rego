# A pool alert that reaches only a chat channel is seen too late.
# Every database or pool alert must reach a paging receiver.
package holdfast.policy.alert_routing

db_words := ["db", "database", "postgres", "pgbouncer", "pool"]

mentions_db(text) if {
	some w in db_words
	contains(lower(text), w)
}

db_alert(a) if mentions_db(a.alert)

db_alert(a) if {
	some k, v in a.labels
	k != "alertname"
	mentions_db(sprintf("%v=%v", [k, v]))
}

# A receiver pages when it has a PagerDuty or Opsgenie integration, or its
# name says so ("pager", "paging", "page-oncall").
pages(am, name) if {
	some r in am.doc.receivers
	r.name == name
	count(object.get(r, "pagerduty_configs", [])) > 0
}

pages(am, name) if {
	some r in am.doc.receivers
	r.name == name
	count(object.get(r, "opsgenie_configs", [])) > 0
}

pages(_, name) if contains(lower(name), "pag")

reaches_pager(a) if {
	some am in input.files
	am.path == a.alertmanager
	some name in a.receivers
	pages(am, name)
}

deny contains d if {
	some a in input.alert_routing
	db_alert(a)
	not reaches_pager(a)
	d := {
		"msg": sprintf("database alert %v routes only to %v in %v, none of which pages", [a.alert, a.receivers, a.alertmanager]),
		"file": a.file,
		"path": sprintf("alert.%v", [a.alert]),
		"value": a.receivers,
	}
}

alertmanager_given if {
	some f in input.files
	f.kind == "alertmanager"
}

warn contains d if {
	some f in input.files
	f.kind == "prometheus_rules"
	some g in f.doc.groups
	some r in g.rules
	db_alert({"alert": object.get(r, "alert", ""), "labels": object.get(r, "labels", {})})
	not alertmanager_given
	d := {
		"msg": sprintf("database alert %v: no Alertmanager config was given, so its routing is not checked", [r.alert]),
		"file": f.path,
		"path": sprintf("alert.%v", [r.alert]),
	}
}
