//! Server-side rendering of the installer page: plain string building, with every value
//! that comes from a charger, a meter or the config passed through [`esc`]. The page and
//! the live updates share these functions, so what `GET /` shows and what the event
//! stream pushes are the same HTML.

use super::checklist::{self, Check, State, clock};
use super::view::{ChargerRow, ConnectorRow, PageView};
use crate::balancer::{FailSafe, FailSafeReason, Reason, Reservation};
use crate::config::Config;
use crate::meters::MeterStatus;
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The names of the live sections, in page order.
pub const SECTIONS: [&str; 5] = ["checklist", "meters", "balancer", "chargers", "messages"];

/// Renders one live section's inner HTML.
pub fn section(name: &str, config: &Config, view: &PageView) -> String {
    match name {
        "checklist" => checklist_html(config, view),
        "meters" => meters_html(config, view),
        "balancer" => balancer_html(config, view),
        "chargers" => chargers_html(view),
        "messages" => messages_html(view),
        _ => String::new(),
    }
}

/// The whole page. `asset_version` busts caches of the script and style sheet.
pub fn page(config: &Config, view: &PageView, asset_version: &str) -> String {
    let site = esc(&config.site.id);
    let name = config.site.name.as_deref().map(esc);
    let title = match &name {
        Some(n) => format!("{n} ({site})"),
        None => site.clone(),
    };
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sitepilot · {title}</title>\
         <link rel=\"icon\" href=\"/ui/icon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/ui/app.css?v={asset_version}\">\
         <script src=\"/ui/app.js?v={asset_version}\" defer></script></head><body>\
         <header class=\"top\"><h1>Sitepilot <span class=\"site\">{title}</span></h1>\
         <p id=\"live\" class=\"live off\" role=\"status\">static view</p></header>\
         <nav class=\"jump\" aria-label=\"Sections\"><a href=\"#checklist\">Checklist</a>\
         <a href=\"#meters\">Meters</a><a href=\"#balancer\">Balancer</a><a href=\"#chargers\">Chargers</a>\
         <a href=\"#messages\">Messages</a></nav><main>"
    );
    let titles = [
        ("checklist", "Commissioning checklist"),
        ("meters", "Meters"),
        ("balancer", "Balancer"),
        ("chargers", "Chargers"),
        ("messages", "Charger message log"),
    ];
    for (id, heading) in titles {
        let _ = write!(h, "<section id=\"{id}\" aria-labelledby=\"h-{id}\"><h2 id=\"h-{id}\">{heading}</h2>");
        if id == "chargers" {
            h.push_str(
                "<div class=\"tagform\"><label for=\"id-tag\">Id tag for remote start</label>\
                 <input id=\"id-tag\" name=\"id-tag\" autocomplete=\"off\" maxlength=\"20\" \
                 placeholder=\"e.g. the installer's card\"></div>",
            );
        }
        let _ = write!(h, "<div data-section=\"{id}\">{}</div></section>", section(id, config, view));
    }
    h.push_str(
        "</main><footer class=\"foot\"><a href=\"/api/v1/chargers\">JSON API</a> · <a href=\"/metrics\">metrics</a> \
         · <a href=\"/health\">health</a></footer></body></html>\n",
    );
    h
}

fn time(stored: &str) -> String {
    match crate::store::parse_ts(stored) {
        Some(t) => format!("<time datetime=\"{}\">{}</time>", esc(stored), clock(t)),
        None => esc(stored),
    }
}

fn time_utc(t: chrono::DateTime<chrono::Utc>) -> String {
    time(&crate::store::ts(t))
}

fn checklist_html(config: &Config, view: &PageView) -> String {
    let items = checklist::checklist(config, view);
    let mut h = String::new();
    let failing = items.iter().filter(|c| c.state == State::Fail).count();
    let waiting = items.iter().filter(|c| c.state == State::Pending).count();
    let summary = match (failing, waiting) {
        (0, 0) => "Everything checked is fine.".to_owned(),
        (f, w) => format!("{f} failing, {w} waiting."),
    };
    let _ = write!(h, "<p class=\"summary\">{summary}</p><ul class=\"checks\">");
    for Check { key, title, state, detail } in &items {
        let _ = write!(
            h,
            "<li class=\"check {s}\" data-check=\"{k}\" data-state=\"{s}\"><span class=\"badge\">{l}</span>\
             <div><strong>{t}</strong><p>{d}</p></div></li>",
            s = state.as_str(),
            l = state.label(),
            k = esc(key),
            t = esc(title),
            d = esc(detail),
        );
    }
    h.push_str("</ul>");
    let notices = checklist::notices(config);
    if !notices.is_empty() {
        h.push_str("<h3>Config notices</h3><ul class=\"notices\">");
        for n in notices {
            let _ = write!(h, "<li>{}</li>", esc(&n));
        }
        h.push_str("</ul>");
    }
    h
}

/// The per-phase limit of the circuit a meter measures, from the config.
fn circuit_limit(config: &Config, m: &MeterStatus) -> Option<[f64; 3]> {
    let node = m.info.node.as_ref()?;
    config.circuits.iter().find(|c| c.id == node.as_str())?.limit_a.map(|l| l.per_phase())
}

fn num(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn meters_html(config: &Config, view: &PageView) -> String {
    if view.meters.is_empty() {
        return "<p class=\"empty\">No meters configured (add [[meters]] to the config).</p>".to_owned();
    }
    let mut h = String::new();
    for (i, m) in view.meters.iter().enumerate() {
        let (pill, pill_text) = if m.stale { ("bad", "stale") } else { ("ok", "fresh") };
        let circuit = match &m.info.node {
            Some(n) => format!("circuit {}", esc(n.as_str())),
            None => "no circuit".to_owned(),
        };
        let read = m.read_at.map(|t| format!(" · read {}", time_utc(t))).unwrap_or_default();
        let _ = write!(
            h,
            "<article class=\"card meter\" data-meter=\"{id}\"><header><h3>{id}</h3>\
             <span class=\"pill {pill}\">{pill_text}</span></header>\
             <p class=\"meta\">{circuit} · {map} · {transport}{read}</p>",
            id = esc(&m.info.id),
            map = esc(&m.info.map),
            transport = esc(&m.info.transport),
        );
        if let Some(e) = &m.last_error {
            let _ = write!(h, "<p class=\"error\">Last error {}: {}</p>", esc(e.kind), esc(&e.message));
        }
        let limit = circuit_limit(config, m);
        match &m.reading {
            Some(r) => {
                h.push_str("<div class=\"phases\">");
                for (p, name) in ["L1", "L2", "L3"].iter().enumerate() {
                    let Some(a) = r.currents_a[p] else { continue };
                    let field = format!("m{i}-{name}");
                    match limit {
                        Some(l) => {
                            let max = l[p].max(0.1);
                            let _ = write!(
                                h,
                                "<div class=\"phase\"><label for=\"{field}\">{name}</label>\
                                 <meter id=\"{field}\" min=\"0\" max=\"{max}\" low=\"{low}\" high=\"{high}\" \
                                 optimum=\"0\" value=\"{v}\">{a} A</meter><span>{a} / {lim} A</span></div>",
                                low = num(max * 0.7, 1),
                                high = num(max * 0.9, 1),
                                v = num(a.max(0.0), 2),
                                a = num(a, 1),
                                lim = num(l[p], 0),
                            );
                        }
                        None => {
                            let _ = write!(
                                h,
                                "<div class=\"phase\"><span class=\"ph\">{name}</span><span>{} A (no limit)</span></div>",
                                num(a, 1)
                            );
                        }
                    }
                }
                h.push_str("</div><p class=\"meta\">");
                let mut parts = Vec::new();
                if let Some(w) = r.power_w {
                    parts.push(format!("{} kW", num(w / 1000.0, 2)));
                }
                if let Some(wh) = r.energy_import_wh {
                    parts.push(format!("{} kWh imported", num(wh / 1000.0, 1)));
                }
                let volts: Vec<String> = r.voltages_v.iter().flatten().map(|v| num(*v, 0)).collect();
                if !volts.is_empty() {
                    parts.push(format!("{} V", volts.join("/")));
                }
                h.push_str(&parts.join(" · "));
                h.push_str("</p>");
            }
            None => h.push_str("<p class=\"empty\">No reading yet.</p>"),
        }
        h.push_str("</article>");
    }
    h
}

/// One sentence for a fail-safe condition.
pub fn fail_safe_text(f: &FailSafe) -> String {
    let what = f.subject.id();
    match &f.reason {
        FailSafeReason::MeterStale { .. } => format!("{what}: meter stale, safe current applies"),
        FailSafeReason::MeterMissing => format!("{what}: meter has not reported, safe current applies"),
        FailSafeReason::MeterInvalid => format!("{what}: meter reported an invalid value, safe current applies"),
        FailSafeReason::ChargerNotAnswering { reserved_a, .. } => {
            format!("{what}: charger not answering, {} A kept for it", num(*reserved_a, 1))
        }
        FailSafeReason::ExternalLimitsExpired { .. } => {
            format!("{what}: grid operator limits expired, safe import limits apply")
        }
    }
}

fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Idle => "idle".to_owned(),
        Reason::Running { limited_by } => match limited_by {
            crate::balancer::Limiter::ChargerMax => "charging, at the charger's maximum".to_owned(),
            crate::balancer::Limiter::EvDemand => "charging, at what the car draws".to_owned(),
            crate::balancer::Limiter::Node { node, phase } => match phase {
                Some(p) => format!("charging, limited by {} on {p:?}", node.as_str()),
                None => format!("charging, limited by {} (power)", node.as_str()),
            },
        },
        Reason::Paused { why } => match why {
            crate::balancer::PauseReason::NoCapacity { node, .. } => format!("paused: no room on {}", node.as_str()),
            crate::balancer::PauseReason::MinPauseTime => "paused: minimum pause time".to_owned(),
            crate::balancer::PauseReason::FloorAboveMax => "paused: minimum above the charger's maximum".to_owned(),
        },
        Reason::Reserved(Reservation::LastLimit { .. }) => "not answering: its last limit is kept".to_owned(),
        Reason::Reserved(Reservation::SafeCurrent) => "not answering: its safe current is kept".to_owned(),
    }
}

fn opt_a(v: Option<f64>) -> String {
    v.map(|a| format!("{} A", num(a, 1))).unwrap_or_else(|| "–".to_owned())
}

fn balancer_html(config: &Config, view: &PageView) -> String {
    if config.energy.is_none() {
        return "<p class=\"empty\">Balancing is off: no [[circuits]] configured.</p>".to_owned();
    }
    let c = &view.control;
    let mut h = String::new();
    let when = c
        .allocation
        .as_ref()
        .and_then(|a| chrono::DateTime::from_timestamp_millis(i64::try_from(a.computed_at_ms).unwrap_or(0)))
        .map(|t| format!(", last applied {}", time_utc(t)))
        .unwrap_or_default();
    let _ = write!(h, "<p class=\"summary\">{} run(s){when}.</p>", c.runs);
    if let Some(why) = &c.refused {
        let _ = write!(h, "<p class=\"error\">Last run refused: {}</p>", esc(why));
    }
    if !c.fail_safe.is_empty() {
        h.push_str("<ul class=\"failsafe\">");
        for f in &c.fail_safe {
            let _ = write!(h, "<li>Fail-safe since {}: {}</li>", time_utc(f.since), esc(&fail_safe_text(&f.fail_safe)));
        }
        h.push_str("</ul>");
    }
    if let Some(a) = &c.allocation {
        h.push_str(
            "<div class=\"scroll\"><table><caption>Circuits (predicted after the setpoints)</caption>\
             <thead><tr><th scope=\"col\">Circuit</th><th scope=\"col\">Meter</th>\
             <th scope=\"col\">L1 / L2 / L3 (A)</th><th scope=\"col\">Limit (A)</th></tr></thead><tbody>",
        );
        for n in &a.nodes {
            let pred: Vec<String> = n.predicted_a.iter().map(|v| num(*v, 1)).collect();
            let lim: Vec<String> = n.limit_a.iter().map(|v| v.map_or("–".to_owned(), |l| num(l, 0))).collect();
            let meter = serde_json::to_value(n.meter).ok().and_then(|v| v.as_str().map(str::to_owned));
            let _ = write!(
                h,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(n.node.as_str()),
                esc(&meter.unwrap_or_default()),
                pred.join(" / "),
                lim.join(" / ")
            );
        }
        h.push_str("</tbody></table></div>");
    }
    if !c.points.is_empty() {
        h.push_str(
            "<div class=\"scroll\"><table><caption>Allocation per connector</caption><thead><tr>\
             <th scope=\"col\">Connector</th><th scope=\"col\">Setpoint</th><th scope=\"col\">Accepted limit</th>\
             <th scope=\"col\">Safe</th><th scope=\"col\">State</th></tr></thead><tbody>",
        );
        let by = c.allocation.as_ref().map(|a| a.by_charger()).unwrap_or_default();
        for p in &c.points {
            let sp = by.iter().find(|(id, _)| id.as_str() == p.id).map(|(_, s)| *s);
            let fail_safe = c.allocation.as_ref().is_some_and(|a| a.is_fail_safe(&p.id));
            let mut state = sp.map(|s| reason_text(&s.reason)).unwrap_or_else(|| "no setpoint yet".to_owned());
            if !p.connected {
                state = format!("offline; {state}");
            }
            if fail_safe {
                state.push_str(" (fail-safe)");
            }
            if let Some(e) = &p.last_error {
                state.push_str(&format!("; last error: {e}"));
            }
            let _ = write!(
                h,
                "<tr data-point=\"{id}\"><th scope=\"row\">{id}</th><td>{sp}</td><td>{acc}</td><td>{safe}</td><td>{st}</td></tr>",
                id = esc(&p.id),
                sp = opt_a(sp.map(|s| s.current_a)),
                acc = opt_a(p.limit_a),
                safe = opt_a(Some(p.safe_current_a)),
                st = esc(&state),
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h
}

fn status_class(status: &str) -> &'static str {
    match status {
        "Available" => "st-ok",
        "Charging" => "st-charging",
        "Preparing" | "SuspendedEV" | "SuspendedEVSE" | "Finishing" | "Reserved" => "st-busy",
        "Faulted" | "Unavailable" => "st-bad",
        _ => "st-unknown",
    }
}

fn button(ch: &str, connector: u32, cmd: &str, label: &str, aria: &str, extra: &str, enabled: bool) -> String {
    format!(
        "<button type=\"button\" data-cmd=\"{cmd}\" data-charger=\"{c}\" data-connector=\"{connector}\" \
         data-label=\"{label}\"{extra} aria-label=\"{a}\"{dis}>{label}</button>",
        c = esc(ch),
        a = esc(aria),
        dis = if enabled { "" } else { " disabled" },
    )
}

fn connector_html(ch: &ChargerRow, k: &ConnectorRow) -> String {
    let id = &ch.id;
    let n = k.connector_id;
    let on = ch.connected();
    let status = k.status.as_deref().unwrap_or("unknown");
    let mut h = format!(
        "<li class=\"connector\" data-connector=\"{n}\"><div class=\"conn-head\"><strong>Connector {n}</strong> \
         <span class=\"status {cls}\" data-status=\"{st}\">{st}</span></div>",
        cls = status_class(status),
        st = esc(status),
    );
    if let Some(e) = &k.error_code {
        let _ = write!(h, "<p class=\"error\">Error: {}</p>", esc(e));
    }
    if let Some(info) = &k.info {
        let _ = write!(h, "<p class=\"meta\">{}</p>", esc(info));
    }
    match &k.transaction {
        Some(tx) => {
            let _ = write!(
                h,
                "<p class=\"session\" data-transaction=\"{txid}\">Session {txid}{tag}{since}{energy}</p>",
                txid = tx.station_tx_id,
                tag = tx.id_tag.as_deref().map(|t| format!(" · tag {}", esc(t))).unwrap_or_default(),
                since = tx.started_at.as_deref().map(|t| format!(" · since {}", time(t))).unwrap_or_default(),
                energy = tx.energy_wh.map(|wh| format!(" · {} kWh", num(wh as f64 / 1000.0, 2))).unwrap_or_default(),
            );
        }
        None => h.push_str("<p class=\"session none\">No session.</p>"),
    }
    let on_this = |what: &str| format!("{what} on {id} connector {n}");
    h.push_str("<div class=\"actions\">");
    h.push_str(&button(id, n, "remote-start", "Start", &on_this("Remote start"), "", on && k.transaction.is_none()));
    let stop_extra = k.transaction.as_ref().map(|t| format!(" data-tx=\"{}\"", t.station_tx_id)).unwrap_or_default();
    h.push_str(&button(
        id,
        n,
        "remote-stop",
        "Stop",
        &on_this("Remote stop"),
        &stop_extra,
        on && k.transaction.is_some(),
    ));
    h.push_str(&button(id, n, "unlock", "Unlock", &on_this("Unlock"), "", on));
    h.push_str(&button(id, n, "availability", "Enable", &on_this("Make operative"), " data-type=\"Operative\"", on));
    h.push_str(&button(
        id,
        n,
        "availability",
        "Disable",
        &on_this("Make inoperative"),
        " data-type=\"Inoperative\"",
        on,
    ));
    h.push_str(&button(id, n, "trigger-message", "Refresh status", &on_this("Ask for the status"), "", on));
    let _ = write!(h, "</div><output data-result=\"{}/{n}\" aria-live=\"polite\"></output></li>", esc(id));
    h
}

fn chargers_html(view: &PageView) -> String {
    if view.chargers.is_empty() {
        return "<p class=\"empty\">No chargers yet (add [[chargers]] to the config).</p>".to_owned();
    }
    let mut h = String::new();
    for ch in &view.chargers {
        let (pill, text) = match (ch.connected(), ch.registration.as_str()) {
            (_, "rejected") => ("bad", "rejected".to_owned()),
            (_, "pending") => ("wait", "awaiting approval".to_owned()),
            (true, _) => ("ok", format!("connected · {}", ch.protocol.unwrap_or_default())),
            (false, _) if ch.last_seen.is_some() => ("bad", "offline".to_owned()),
            (false, _) => ("wait", "never connected".to_owned()),
        };
        let _ = write!(
            h,
            "<article class=\"card charger\" data-charger=\"{id}\" data-connected=\"{c}\"><header><h3>{id}{name}</h3>\
             <span class=\"pill {pill}\">{text}</span></header>",
            id = esc(&ch.id),
            c = ch.connected(),
            name = ch.name.as_deref().map(|n| format!(" <small>{}</small>", esc(n))).unwrap_or_default(),
            text = esc(&text),
        );
        let mut meta = Vec::new();
        let vm: Vec<&str> = [ch.vendor.as_deref(), ch.model.as_deref()].into_iter().flatten().collect();
        if !vm.is_empty() {
            meta.push(esc(&vm.join(" ")));
        }
        if let Some(fw) = &ch.firmware_version {
            meta.push(format!("firmware {}", esc(fw)));
        }
        if let Some(b) = &ch.last_boot {
            meta.push(format!("booted {}", time(b)));
        }
        if let Some(s) = &ch.main_status {
            meta.push(format!("charger status {}", esc(s)));
        }
        if !meta.is_empty() {
            let _ = write!(h, "<p class=\"meta\">{}</p>", meta.join(" · "));
        }
        if !ch.connectors.is_empty() {
            h.push_str("<ul class=\"connectors\">");
            for k in &ch.connectors {
                h.push_str(&connector_html(ch, k));
            }
            h.push_str("</ul>");
        }
        let on = ch.connected();
        let whole = |what: &str| format!("{what} {}", ch.id);
        h.push_str("<div class=\"actions\">");
        h.push_str(&button(&ch.id, 0, "reset", "Soft reset", &whole("Soft reset"), " data-type=\"Soft\"", on));
        h.push_str(&button(&ch.id, 0, "reset", "Hard reset", &whole("Hard reset"), " data-type=\"Hard\"", on));
        let _ = write!(h, "</div><output data-result=\"{}/0\" aria-live=\"polite\"></output></article>", esc(&ch.id));
    }
    h
}

fn messages_html(view: &PageView) -> String {
    if view.messages.is_empty() {
        return "<p class=\"empty\">No messages yet.</p>".to_owned();
    }
    let mut h = String::from("<ol class=\"log\">");
    for m in &view.messages {
        let kind = match m.message_type {
            2 => "call",
            3 => "result",
            4 => "error",
            _ => "unparsed",
        };
        let dir = if m.direction == "in" { "from" } else { "to" };
        let payload = match &m.payload {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let mut short: String = payload.chars().take(240).collect();
        if short.len() < payload.len() {
            short.push('…');
        }
        let _ = write!(
            h,
            "<li class=\"{dir} {kind}\" data-id=\"{id}\"><div class=\"line\">{t} <span class=\"dir\">{dir}</span> \
             <strong>{ch}</strong> <span class=\"action\">{action}</span> <span class=\"kind\">{kind}</span></div>\
             <code>{p}</code></li>",
            id = m.id,
            t = time(&m.ts),
            ch = esc(&m.charger_id),
            action = esc(m.action.as_deref().unwrap_or("?")),
            p = esc(&short),
        );
    }
    h.push_str("</ol>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_covers_element_content_and_quoted_attributes() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("CP-1 é"), "CP-1 é");
    }
}
