//! The OpenAPI 3.1 document of the fleet API, generated from the route table
//! ([`super::routes`]: paths, methods, roles, query parameters, bodies) and the schemas
//! below (the JSON of [`super::views`]).
//!
//! Written by hand rather than derived with utoipa: the route table already holds
//! everything but the schemas, the schemas are short, and this keeps the hub free of a
//! proc-macro dependency (and the workspace's lock file unchanged). What keeps it honest
//! are the tests: every route the server answers is in the document and every operation
//! of the document is answered, and the API's answers in the scenario tests are
//! validated against these schemas (which forbid unknown fields).

use serde_json::{Map, Value, json};

use super::params::{self, Param};
use super::{PREFIX, Route};
use crate::auth::Role;

pub(crate) fn string() -> Value {
    json!({"type": "string"})
}
pub(crate) fn string_or_null() -> Value {
    json!({"type": ["string", "null"]})
}
fn integer() -> Value {
    json!({"type": "integer", "format": "int64"})
}
fn integer_or_null() -> Value {
    json!({"type": ["integer", "null"], "format": "int64"})
}
fn boolean() -> Value {
    json!({"type": "boolean"})
}
fn boolean_or_null() -> Value {
    json!({"type": ["boolean", "null"]})
}
pub(crate) fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}
fn time_or_null() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}
pub(crate) fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A closed object (every property always present, nothing else), as the API writes it.
pub(crate) fn object(description: &str, properties: Vec<(&str, Value)>) -> Value {
    let required: Vec<&str> = properties.iter().map(|(k, _)| *k).collect();
    let properties: Map<String, Value> = properties.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    json!({
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

pub(crate) fn page_of(item: &str) -> Value {
    object(
        &format!("One page of {item} items; `next_offset` is the next page's offset, null on the last page."),
        vec![
            ("items", json!({"type": "array", "items": schema_ref(item)})),
            ("limit", integer()),
            ("offset", integer()),
            ("next_offset", integer_or_null()),
        ],
    )
}

pub(crate) fn list_of(item: &str) -> Value {
    object(&format!("All {item} items."), vec![("items", json!({"type": "array", "items": schema_ref(item)}))])
}

/// A command variant: `type` plus its fields (`required` lists the non-optional ones).
fn command_variant(kind: &str, description: &str, fields: Vec<(&str, Value)>, optional: &[&str]) -> Value {
    let mut required = vec!["type"];
    required.extend(fields.iter().map(|(k, _)| *k).filter(|k| !optional.contains(k)));
    let mut properties = Map::new();
    properties.insert("type".into(), json!({"type": "string", "const": kind}));
    for (k, v) in fields {
        properties.insert(k.to_owned(), v);
    }
    json!({"type": "object", "description": description, "required": required, "properties": properties})
}

fn station() -> Value {
    json!({"type": "string", "minLength": 1, "description": "The charging station (its OCPP identity)."})
}

/// `(schema name, command type, schema)` of every command.
fn command_variants() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "RemoteStartCommand",
            "remote_start",
            command_variant(
                "remote_start",
                "Start a session for `id_tag` (OCPP RemoteStartTransaction / RequestStartTransaction).",
                vec![
                    ("station", station()),
                    (
                        "connector",
                        json!({"type": ["integer", "null"], "minimum": 1,
                               "description": "Leave out to let the charger choose."}),
                    ),
                    ("id_tag", json!({"type": "string", "minLength": 1})),
                ],
                &["connector"],
            ),
        ),
        (
            "RemoteStopCommand",
            "remote_stop",
            command_variant(
                "remote_stop",
                "Stop a session by the station's transaction id.",
                vec![("station", station()), ("transaction_id", integer())],
                &[],
            ),
        ),
        (
            "ChangeAvailabilityCommand",
            "change_availability",
            command_variant(
                "change_availability",
                "Make a connector (0: the whole station) operative or inoperative.",
                vec![
                    ("station", station()),
                    ("connector", json!({"type": "integer", "minimum": 0})),
                    ("operative", boolean()),
                ],
                &[],
            ),
        ),
        (
            "ResetCommand",
            "reset",
            command_variant(
                "reset",
                "Reboot a station (hard: at once; soft: after its sessions).",
                vec![("station", station()), ("hard", boolean())],
                &[],
            ),
        ),
        (
            "UnlockConnectorCommand",
            "unlock_connector",
            command_variant(
                "unlock_connector",
                "Release a connector's cable lock.",
                vec![("station", station()), ("connector", json!({"type": "integer", "minimum": 1}))],
                &[],
            ),
        ),
        (
            "ChangeConfigurationCommand",
            "change_configuration",
            command_variant(
                "change_configuration",
                "Set one configuration key of a station.",
                vec![("station", station()), ("key", json!({"type": "string", "minLength": 1})), ("value", string())],
                &[],
            ),
        ),
        (
            "SetLocalListCommand",
            "set_local_list",
            command_variant(
                "set_local_list",
                "Replace (`full`) or update the site's local authorization list.",
                vec![("full", boolean()), ("entries", json!({"type": "array", "items": schema_ref("LocalListEntry")}))],
                &[],
            ),
        ),
        (
            "SetTariffCommand",
            "set_tariff",
            command_variant(
                "set_tariff",
                "The tariff the site shows and prices receipts with while offline.",
                vec![
                    ("tariff_id", json!({"type": "string", "minLength": 1})),
                    ("tariff", json!({"type": "object", "description": "OCPI 2.2.1 tariff JSON."})),
                ],
                &[],
            ),
        ),
        (
            "SetSiteLimitsCommand",
            "set_site_limits",
            command_variant(
                "set_site_limits",
                "Grid-operator or fleet limits for the site's load balancer.",
                vec![("limits", json!({"type": "object"}))],
                &[],
            ),
        ),
        (
            "ReserveNowCommand",
            "reserve_now",
            command_variant(
                "reserve_now",
                "Reserve a connector for an id tag until `expiry` (OCPP ReserveNow); `reservation_id` is the \
                 hub's, unique over its sites (OCPI reservations get one of their own).",
                vec![
                    ("station", station()),
                    ("connector", json!({"type": "integer", "minimum": 1})),
                    ("expiry", time()),
                    ("id_tag", json!({"type": "string", "minLength": 1})),
                    ("reservation_id", integer()),
                ],
                &[],
            ),
        ),
        (
            "CancelReservationCommand",
            "cancel_reservation",
            command_variant(
                "cancel_reservation",
                "End a reservation (OCPP CancelReservation).",
                vec![("station", station()), ("reservation_id", integer())],
                &[],
            ),
        ),
        (
            "SetSessionLimitCommand",
            "set_session_limit",
            command_variant(
                "set_session_limit",
                "Cap one running transaction over time (an OCPI charging profile): a bound on what the \
                 site's balancer offers it, or a TxProfile at a site without one. `limit: null` removes it.",
                vec![
                    ("station", station()),
                    ("connector", json!({"type": "integer", "minimum": 1})),
                    ("transaction_id", integer()),
                    (
                        "limit",
                        json!({"type": ["object", "null"], "required": ["unit", "periods"], "properties": {
                            "start": time_or_null(),
                            "duration_s": integer_or_null(),
                            "unit": {"type": "string", "enum": ["W", "A"]},
                            "min_rate": {"type": ["number", "null"]},
                            "periods": {"type": "array", "minItems": 1, "items": {"type": "object",
                                "required": ["start_s", "limit"], "properties": {
                                    "start_s": {"type": "integer", "minimum": 0},
                                    "limit": {"type": "number", "minimum": 0}}}},
                        }}),
                    ),
                ],
                &["limit"],
            ),
        ),
        (
            "GetCompositeScheduleCommand",
            "get_composite_schedule",
            command_variant(
                "get_composite_schedule",
                "Ask the charger for the schedule it will follow on a connector (OCPP GetCompositeSchedule); \
                 its answer is the result's detail.",
                vec![
                    ("station", station()),
                    ("connector", json!({"type": "integer", "minimum": 1})),
                    ("duration_s", json!({"type": "integer", "minimum": 0})),
                ],
                &[],
            ),
        ),
    ]
}

/// The component schemas.
pub fn schemas() -> Map<String, Value> {
    let mut s = Map::new();
    let mut put = |name: &str, schema: Value| {
        s.insert(name.to_owned(), schema);
    };
    put(
        "Problem",
        json!({
            "type": "object",
            "description": "An error (RFC 9457 problem details); `detail` says precisely what is wrong.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "const": "about:blank"},
                "title": {"type": "string", "description": "The status's reason phrase."},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
            },
        }),
    );
    put(
        "Site",
        object(
            "A site and how its sync stands.",
            vec![
                ("id", string()),
                ("name", string()),
                ("created_at", time_or_null()),
                (
                    "applied_through",
                    json!({"type": "integer", "minimum": 0, "description":
                    "Every event of the site up to this seq is applied."}),
                ),
                ("last_event_at", time_or_null()),
                (
                    "online",
                    json!({"type": ["boolean", "null"], "description":
                    "The site's retained presence (up/status; its MQTT last will says false). Null: never reported."}),
                ),
                ("status_at", time_or_null()),
                ("last_hello_at", time_or_null()),
                ("agent_version", string_or_null()),
                ("hello_oldest_unacked", integer_or_null()),
                ("hello_newest", integer_or_null()),
                ("chargers", json!({"type": "integer", "minimum": 0})),
            ],
        ),
    );
    put("SitePage", page_of("Site"));
    let phases = |item: Value| json!({"type": "array", "items": item, "minItems": 3, "maxItems": 3});
    let number = json!({"type": "number"});
    let number_or_null = json!({"type": ["number", "null"]});
    put(
        "EnergyLimit",
        object(
            "A limit on a circuit: per phase (A), total power (W), or both.",
            vec![
                (
                    "source",
                    json!({"type": "string", "description": "fuse, power_limit, grid_operator, grid_operator_safe \
                    (the operator's safe values: its limits expired), schedule; a newer edge may add others."}),
                ),
                ("current_a", json!({"oneOf": [phases(number.clone()), {"type": "null"}]})),
                ("power_w", number_or_null.clone()),
                ("until", time_or_null()),
            ],
        ),
    );
    put(
        "CircuitEnergy",
        object(
            "A circuit of the site: its meter reading per phase [L1, L2, L3] and every limit on it.",
            vec![
                ("circuit", string()),
                ("parent", string_or_null()),
                ("meter", string_or_null()),
                ("state", json!({"type": "string", "description": "unmetered, fresh, stale, missing or invalid."})),
                ("stale", boolean()),
                ("read_at", time_or_null()),
                ("current_a", phases(number_or_null.clone())),
                ("power_w", phases(number_or_null.clone())),
                ("total_power_w", number_or_null.clone()),
                ("allocated_a", phases(number.clone())),
                ("limits", json!({"type": "array", "items": schema_ref("EnergyLimit")})),
            ],
        ),
    );
    put(
        "SiteEnergy",
        object(
            "A site's newest power-and-limits report.",
            vec![
                ("site_id", string()),
                ("received_at", time_or_null()),
                (
                    "report",
                    json!({"oneOf": [object(
                        "As the edge sent it (shared-model/SYNC.md, site energy telemetry).",
                        vec![
                            ("at", time()),
                            ("circuits", json!({"type": "array", "items": schema_ref("CircuitEnergy")})),
                            ("allocated_a", phases(number.clone())),
                            (
                                "fail_safe",
                                object(
                                    "Whether the load balancer runs on safe values, and why.",
                                    vec![
                                        ("active", boolean()),
                                        (
                                            "reasons",
                                            json!({"type": "array", "items": object(
                                                "One thing in fail-safe.",
                                                vec![
                                                    ("subject", string()),
                                                    ("kind", string()),
                                                    ("since", time_or_null()),
                                                ],
                                            )}),
                                        ),
                                    ],
                                ),
                            ),
                        ],
                    ), {"type": "null"}]}),
                ),
            ],
        ),
    );
    put(
        "Connector",
        object(
            "An EVSE / connector and the status its charger last reported (evse 0, connector 0: the station).",
            vec![
                ("evse", integer()),
                ("connector", integer()),
                (
                    "status",
                    json!({"type": "string", "description": "Available, Preparing, Charging, SuspendedEV, \
                    SuspendedEVSE, Finishing, Occupied, Reserved, Unavailable or Faulted."}),
                ),
                ("error_code", string_or_null()),
                ("info", string_or_null()),
                ("vendor_error_code", string_or_null()),
                ("status_at", time_or_null()),
            ],
        ),
    );
    put("ConnectorList", list_of("Connector"));
    put(
        "Charger",
        object(
            "A charging station with its live status.",
            vec![
                ("site_id", string()),
                ("station", string()),
                (
                    "status",
                    json!({"type": "string", "enum": ["online", "offline", "unknown"], "description":
                    "online: connected to its site and the site to the hub; offline: either link is known to be \
                     down; unknown: not reported yet."}),
                ),
                ("connected", boolean_or_null()),
                ("connection_changed_at", time_or_null()),
                ("site_online", boolean_or_null()),
                ("vendor", string_or_null()),
                ("model", string_or_null()),
                ("serial_number", string_or_null()),
                ("firmware_version", string_or_null()),
                ("registration", string_or_null()),
                ("last_boot_at", time_or_null()),
                ("updated_at", time_or_null()),
                ("connectors", json!({"type": "array", "items": schema_ref("Connector")})),
            ],
        ),
    );
    put("ChargerPage", page_of("Charger"));
    put(
        "Session",
        object(
            "A charging session (transaction) with its energy.",
            vec![
                ("site_id", string()),
                ("transaction_uid", string()),
                ("station", string()),
                ("station_transaction_id", string_or_null()),
                ("evse", integer_or_null()),
                ("connector", integer_or_null()),
                ("id_tag", string_or_null()),
                ("origin", string_or_null()),
                ("active", json!({"type": "boolean", "description": "No stop seen yet."})),
                ("started_at", time_or_null()),
                ("stopped_at", time_or_null()),
                ("meter_start_wh", integer_or_null()),
                ("meter_stop_wh", integer_or_null()),
                ("last_energy_wh", integer_or_null()),
                ("last_energy_at", time_or_null()),
                (
                    "energy_wh",
                    json!({"type": ["integer", "null"], "description":
                    "Energy delivered, Wh: final once stopped (meter stop - meter start), so far while active \
                     (latest register - meter start); null when unknown."}),
                ),
                ("stop_reason", string_or_null()),
                (
                    "reconciled",
                    json!({"type": "boolean", "description":
                    "The stop was inferred by the site (no stop came from the charger)."}),
                ),
                ("updated_at", time_or_null()),
            ],
        ),
    );
    put("SessionPage", page_of("Session"));
    put(
        "MeterSample",
        object(
            "One sampled value.",
            vec![
                ("ts", time_or_null()),
                ("evse", integer()),
                ("connector", integer()),
                ("transaction_uid", string_or_null()),
                ("measurand", string()),
                ("phase", string_or_null()),
                ("location", string_or_null()),
                ("unit", string_or_null()),
                ("context", string_or_null()),
                ("format", string_or_null()),
                ("value", json!({"type": "string", "description": "As the charger sent it."})),
                (
                    "value_num",
                    json!({"type": ["number", "null"], "description":
                    "In the base unit (Wh, W, A, V, ...), when numeric."}),
                ),
                ("seq", integer()),
            ],
        ),
    );
    put("MeterSamplePage", page_of("MeterSample"));
    put(
        "LocalListEntry",
        json!({
            "type": "object",
            "required": ["id_tag"],
            "properties": {
                "id_tag": {"type": "string", "minLength": 1},
                "status": {"type": ["string", "null"], "description": "Accepted, Blocked, ...; null removes the entry."},
                "expiry": time_or_null(),
                "parent_id_tag": string_or_null(),
            },
        }),
    );
    let variants = command_variants();
    let mapping: Map<String, Value> = variants
        .iter()
        .map(|(name, kind, _)| ((*kind).to_owned(), json!(format!("#/components/schemas/{name}"))))
        .collect();
    put(
        "Command",
        json!({
            "description": "A command to a site (shared_model::sync::Command): `type` and its fields.",
            "oneOf": variants.iter().map(|(name, _, _)| schema_ref(name)).collect::<Vec<_>>(),
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }),
    );
    for (name, _, schema) in variants {
        put(name, schema);
    }
    put(
        "CommandRequest",
        json!({
            "description": "A command and, optionally, how long it may wait to be started. Unknown fields are refused.",
            "allOf": [
                schema_ref("Command"),
                {"type": "object", "properties": {"expires_in_s": {
                    "type": ["integer", "null"], "minimum": 1, "maximum": super::MAX_COMMAND_EXPIRY_S,
                    "description": "Seconds until the command expires (not started after that, no longer re-sent). \
                        Default: the hub's [api] command_expiry_s."}}},
            ],
            "unevaluatedProperties": false,
        }),
    );
    put(
        "CommandAccepted",
        object(
            "The command is stored and on its way.",
            vec![
                ("command_id", string()),
                ("site_id", string()),
                ("status", json!({"type": "string", "const": "sent"})),
                (
                    "published",
                    json!({"type": "boolean", "description":
                    "Whether it was handed to MQTT now; if not, it goes out at the site's next hello."}),
                ),
                ("issued_at", time()),
                ("expires_at", time_or_null()),
                ("location", json!({"type": "string", "description": "Where to follow it (GET)."})),
            ],
        ),
    );
    put(
        "CommandResult",
        object(
            "The site's answer (the first one; a site answers a command id once).",
            vec![
                ("outcome", json!({"type": "string", "enum": ["accepted", "rejected", "failed", "expired"]})),
                ("detail", json!({"description": "The charger's answer, or why it failed."})),
                ("at", time()),
                ("received_at", time_or_null()),
            ],
        ),
    );
    put(
        "CommandStatus",
        object(
            "A command and what became of it.",
            vec![
                ("command_id", string()),
                ("site_id", string()),
                ("command", schema_ref("Command")),
                (
                    "status",
                    json!({"type": "string", "enum": ["sent", "answered", "unanswered"], "description":
                    "sent: waiting for the site's result (re-sent at each hello of the site until it expires); \
                     answered: see result; unanswered: expired without a result (a late one is still recorded)."}),
                ),
                ("issued_at", time()),
                ("expires_at", time_or_null()),
                ("issued_by", json!({"type": ["string", "null"], "description": "The API key's name."})),
                ("sent_count", json!({"type": "integer", "minimum": 0})),
                ("last_sent_at", time_or_null()),
                ("result", json!({"anyOf": [schema_ref("CommandResult"), {"type": "null"}]})),
            ],
        ),
    );
    put("CommandPage", page_of("CommandStatus"));
    put(
        "ApiKey",
        object(
            "An API key (its token is shown once, when it is made, and never stored).",
            vec![
                ("id", string()),
                ("name", string()),
                ("role", json!({"type": "string", "enum": Role::ALL.map(Role::as_str)})),
                ("created_at", time_or_null()),
                (
                    "last_used_at",
                    json!({"type": ["string", "null"], "format": "date-time",
                    "description": "Updated at most once a minute."}),
                ),
                ("revoked_at", time_or_null()),
            ],
        ),
    );
    put("ApiKeyList", list_of("ApiKey"));
    put(
        "OcpiOutboxRetry",
        object(
            "What a retry of a partner's parked CDRs did.",
            vec![
                ("name", string()),
                (
                    "retried",
                    json!({"type": "integer", "minimum": 0,
                    "description": "Parked CDRs moved back to pending (0 when none was parked)."}),
                ),
            ],
        ),
    );
    put(
        "OpenApiDocument",
        json!({"type": "object", "required": ["openapi", "info", "paths"], "description": "An OpenAPI 3.1 document."}),
    );
    for (name, schema) in crate::billing::api::schemas() {
        s.insert(name.to_owned(), schema);
    }
    s
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {super::problem::PROBLEM_JSON: {"schema": schema_ref("Problem")}},
    })
}

fn response_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

/// The path parameters of a path, in order (`/sites/{site}` -> `site`).
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}')).collect()
}

fn path_param(name: &str) -> Value {
    let (description, schema) = match name {
        "site" => ("The site id.", json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})),
        "station" => ("The charging station (its OCPP identity).", string()),
        "transaction_uid" => ("The session's id at the site.", string()),
        "command_id" => ("The command id (as returned when it was sent).", string()),
        _ => ("", string()),
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

fn query_param(p: &Param) -> Value {
    json!({"name": p.name, "in": "query", "required": false, "description": p.description,
           "schema": params::schema(p.kind)})
}

fn operation(r: &Route) -> Value {
    let d = &r.doc;
    let roles: Vec<&str> = Role::ALL.iter().filter(|x| x.allows(r.role)).map(|x| x.as_str()).collect();
    let mut description = d.description.to_owned();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(&format!("Roles: {}.", roles.join(", ")));
    let mut parameters: Vec<Value> = path_params(r.path).into_iter().map(path_param).collect();
    parameters.extend(d.query.iter().map(query_param));
    let mut responses = Map::new();
    let media = if d.ok.1 == crate::billing::api::HTML_DOCUMENT { "text/html" } else { "application/json" };
    let mut ok = json!({"description": d.summary, "content": {media: {"schema": schema_ref(d.ok.1)}}});
    if d.ok.0 == 202 {
        ok["headers"] = json!({"Location": {"description": "Where to follow the request (GET).", "schema": string()}});
    }
    responses.insert(d.ok.0.to_string(), ok);
    if !parameters.is_empty() || d.body.is_some() {
        responses.insert("400".into(), response_ref("BadRequest"));
    }
    responses.insert("401".into(), response_ref("Unauthorized"));
    if r.role > Role::Viewer {
        responses.insert("403".into(), response_ref("Forbidden"));
    }
    if !path_params(r.path).is_empty() {
        responses.insert("404".into(), response_ref("NotFound"));
    }
    if d.body.is_some() {
        responses.insert("413".into(), response_ref("TooLarge"));
        responses.insert("415".into(), response_ref("UnsupportedMediaType"));
        responses.insert("422".into(), response_ref("Unprocessable"));
    }
    responses.insert("500".into(), response_ref("ServerError"));
    responses.insert("503".into(), response_ref("Unavailable"));
    let mut op = json!({
        "operationId": d.operation_id,
        "tags": [d.tag],
        "summary": d.summary,
        "description": description,
        "x-sitepilot-role": r.role.as_str(),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = d.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(body)}}});
    }
    op
}

/// The OCPI administration routes (served by `crate::ocpi::admin` under `/api/v1/ocpi`,
/// admin role) that this document describes.
fn ocpi_admin_paths() -> Vec<(String, Value)> {
    let name = json!({"name": "name", "in": "path", "required": true,
                      "description": "The OCPI partner's name.", "schema": string()});
    let retry = json!({
        "operationId": "retryOcpiOutbox",
        "tags": ["ocpi"],
        "summary": "Send a partner's parked CDRs again",
        "description": "A CDR the partner kept refusing (an OCPI error status, 8 times) is parked, never deleted \
            (`GET /api/v1/ocpi/partners` counts them in `outbox.parked`). Once the partner has fixed what made it \
            refuse them, this moves them back to pending: they are POSTed again, in their order, through the same \
            durable outbox, each delivered once. Served when `[ocpi] enabled`.\n\nRoles: admin.",
        "x-sitepilot-role": "admin",
        "parameters": [name],
        "responses": {
            "200": {"description": "The parked CDRs are pending again.",
                    "content": {"application/json": {"schema": schema_ref("OcpiOutboxRetry")}}},
            "401": response_ref("Unauthorized"),
            "403": response_ref("Forbidden"),
            "404": response_ref("NotFound"),
            "500": response_ref("ServerError"),
            "503": response_ref("Unavailable"),
        },
    });
    vec![(format!("{PREFIX}/ocpi/partners/{{name}}/outbox/retry"), json!({ "post": retry }))]
}

/// The whole document.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let item = paths.entry(format!("{PREFIX}{}", r.path)).or_insert_with(|| json!({}));
        item[r.verb.key()] = operation(r);
    }
    for (path, item) in ocpi_admin_paths() {
        paths.insert(path, item);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sitepilot cloud hub: fleet API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The fleet of sites as the hub knows it (sites, chargers with live status, sessions \
                with energy, meter series) and commands to sites.\n\n\
                Every route needs `Authorization: Bearer <API key>` (made with `cloud-hub apikey add NAME --role \
                ROLE`); roles are viewer (read), fleet_manager (and send commands) and admin (and list keys). \
                Errors are problem JSON (RFC 9457) with the reason in `detail`. Lists page with `limit` and \
                `offset`; each page gives the `next_offset` (null on the last). Times are RFC 3339 in UTC; \
                energy in Wh.\n\n\
                Not part of this API: `/health` (open) and `/metrics` (open; keep it behind a firewall).",
        },
        "security": [{"bearer": []}],
        "tags": [
            {"name": "sites"}, {"name": "chargers"}, {"name": "sessions"}, {"name": "meter series"},
            {"name": "commands"}, {"name": "billing"}, {"name": "api keys"}, {"name": "ocpi"}, {"name": "meta"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description":
                    "An API key from `cloud-hub apikey add` (shown once; the hub keeps only its SHA-256)."},
            },
            "schemas": schemas(),
            "responses": {
                "BadRequest": problem_response("A path or query parameter, or the body's JSON, is not valid."),
                "Unauthorized": problem_response("No API key, or one that is unknown or revoked."),
                "Forbidden": problem_response("The API key's role does not allow this route."),
                "NotFound": problem_response("No such site, charger, session or command."),
                "TooLarge": problem_response("The body is larger than the hub accepts (2 MiB)."),
                "UnsupportedMediaType": problem_response("The body is not declared as application/json."),
                "Unprocessable": problem_response("The body is JSON but not a valid request; `detail` says why."),
                "ServerError": problem_response("The hub failed (the details are in its log)."),
                "Unavailable": problem_response("The database is unavailable; retry later."),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document(&super::super::routes());
        let text = doc.to_string();
        let mut rest = text.as_str();
        let mut seen = 0;
        while let Some(i) = rest.find("\"$ref\":\"#/") {
            rest = &rest[i + 9..];
            let end = rest.find('"').unwrap_or(rest.len());
            let pointer = &rest[..end];
            assert!(doc.pointer(pointer).is_some(), "dangling $ref #{pointer}");
            seen += 1;
        }
        assert!(seen > 30, "{seen} refs");
        for (_, target) in
            doc["components"]["schemas"]["Command"]["discriminator"]["mapping"].as_object().expect("mapping")
        {
            let pointer = target.as_str().and_then(|t| t.strip_prefix('#')).expect("local ref");
            assert!(doc.pointer(pointer).is_some(), "dangling mapping {pointer}");
        }
    }

    #[test]
    fn the_ocpi_outbox_retry_is_documented() {
        let doc = document(&super::super::routes());
        let op = &doc["paths"]["/api/v1/ocpi/partners/{name}/outbox/retry"]["post"];
        assert_eq!(op["x-sitepilot-role"], "admin");
        assert_eq!(
            op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/OcpiOutboxRetry"
        );
    }

    #[test]
    fn path_parameters_are_found() {
        assert_eq!(path_params("/sites/{site}/chargers/{station}"), vec!["site", "station"]);
        assert!(path_params("/sites").is_empty());
    }

    #[test]
    fn every_command_type_has_a_schema() {
        let kinds: Vec<&str> = command_variants().iter().map(|(_, k, _)| *k).collect();
        assert_eq!(kinds, super::super::command_body::COMMAND_TYPES);
    }
}
