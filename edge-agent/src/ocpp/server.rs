//! The OCPP WebSocket listener and handshake.
//!
//! The handshake decides, before any OCPP message flows: the identity (last path segment
//! of `{path}/{chargePointId}`), the subprotocol (an upgrade offering none we speak is
//! refused with 400), and, under security profile 1, HTTP Basic credentials (401 when
//! missing or wrong, OCPP 1.6 security whitepaper §2.1). Unknown identities follow the
//! configured policy: refused (404), accepted as pending, or accepted.

use crate::app::Shared;
use crate::chargers::{Registration, StationAuth};
use crate::config::UnknownChargerPolicy;
use crate::metrics::ReasonLabels;
use http::{HeaderValue, StatusCode};
use shared_model::ids::ChargePointId;
use shared_model::ocpp::ProtocolVersion;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long a client may take to complete the HTTP upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(reason) = accept(shared, stream, shutdown).await {
                            tracing::info!(%peer, %reason, "ocpp: connection refused");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "ocpp: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// What the handshake decided.
struct Admitted {
    station: ChargePointId,
    version: ProtocolVersion,
    /// An unknown station admitted under the `pending` or `accept` policy.
    new_registration: Option<(Registration, Option<String>)>,
}

fn refuse(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(format!("{reason}\n")));
    *resp.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert("WWW-Authenticate", HeaderValue::from_static("Basic realm=\"OCPP\""));
    }
    resp
}

async fn accept(shared: Arc<Shared>, stream: TcpStream, shutdown: watch::Receiver<bool>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let hard_limit = shared.config.ocpp.max_frame_bytes.saturating_mul(4).max(1 << 20);
    // OCPP messages are small: a 4 KiB read chunk instead of tungstenite's 128 KiB cuts
    // the memory of 5 000 idle connections from ~680 MiB to a fraction (larger messages
    // still assemble across reads), and writes go out at once (no write buffering).
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(hard_limit);
    ws_config.max_frame_size = Some(hard_limit);
    ws_config.read_buffer_size = 4 * 1024;
    ws_config.write_buffer_size = 0;
    let mut admitted: Option<Admitted> = None;
    // The callback's signature is tungstenite's (`ErrorResponse` is an http::Response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match admit(&shared, req) {
            Ok(a) => {
                let mut resp = resp;
                resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(a.version.subprotocol()));
                admitted = Some(a);
                Ok(resp)
            }
            Err((status, reason, label)) => {
                shared.metrics.handshake_refused.get_or_create(&ReasonLabels { reason: label }).inc();
                Err(refuse(status, &reason))
            }
        }
    };
    let ws = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config)),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake failed: {e}"))?;
    let Some(a) = admitted else { return Err("handshake finished without a decision".into()) };
    if let Some((registration, password_hash)) = a.new_registration {
        let station = a.station.as_str().to_owned();
        let hash = password_hash.clone();
        let stored = shared
            .store
            .write(move |conn| {
                crate::chargers::register_unknown(conn, &station, registration, hash, chrono::Utc::now())
            })
            .await;
        if let Err(e) = stored {
            return Err(format!("registering unknown station {}: {e}", a.station));
        }
        if shared.directory.get(a.station.as_str()).is_none() {
            let password_hash = if registration == Registration::Accepted { password_hash } else { None };
            shared.directory.set(a.station.as_str(), StationAuth { registration, password_hash });
        }
        tracing::info!(station = %a.station, registration = registration.as_str(), "ocpp: unknown station admitted");
    }
    super::connection::run(shared, a.station, a.version, ws, shutdown).await;
    Ok(())
}

type Refusal = (StatusCode, String, &'static str);

fn admit(shared: &Shared, req: &Request) -> Result<Admitted, Refusal> {
    let cfg = &shared.config.ocpp;
    let path = req.uri().path();
    let rest =
        path.strip_prefix(cfg.path.trim_end_matches('/')).and_then(|r| r.strip_prefix('/')).ok_or_else(|| {
            (StatusCode::NOT_FOUND, format!("no OCPP endpoint at {path}; use {}/{{chargePointId}}", cfg.path), "path")
        })?;
    let identity = rest.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let station: ChargePointId =
        identity.parse().map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid charge point id: {e}"), "identity"))?;

    let offered = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let version = offered.iter().find_map(|p| ProtocolVersion::from_subprotocol(p)).ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("no supported OCPP subprotocol offered (got {offered:?}; supported: ocpp1.6)"),
            "subprotocol",
        )
    })?;

    let credentials =
        req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::auth::parse_basic);
    let known = shared.directory.get(station.as_str());
    let new_registration = match (&known, cfg.unknown_chargers) {
        (Some(_), _) => None,
        (None, UnknownChargerPolicy::Reject) => {
            return Err((StatusCode::NOT_FOUND, format!("unknown charge point {station}"), "unknown"));
        }
        (None, UnknownChargerPolicy::Pending) => {
            // Remember what it presented so an installer's approval can adopt it.
            let hash = credentials.as_ref().and_then(|(_, p)| crate::auth::hash_password(p).ok());
            Some((Registration::Pending, hash))
        }
        (None, UnknownChargerPolicy::Accept) => {
            let hash = credentials.as_ref().and_then(|(_, p)| crate::auth::hash_password(p).ok());
            Some((Registration::Accepted, hash))
        }
    };

    if cfg.security_profile >= 1
        && let Some(known) = &known
        && known.registration != Registration::Pending
    {
        let Some((user, password)) = credentials else {
            return Err((StatusCode::UNAUTHORIZED, "HTTP Basic credentials required".into(), "no_credentials"));
        };
        if user != station.as_str() {
            return Err((
                StatusCode::UNAUTHORIZED,
                "the user name must be the charge point id".into(),
                "bad_credentials",
            ));
        }
        let Some(phc) = &known.password_hash else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "no password is configured for this charge point".into(),
                "bad_credentials",
            ));
        };
        let verify = || shared.verifier.verify(station.as_str(), phc, &password);
        // argon2 is deliberately slow: keep it off the async workers where we can.
        let ok = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(verify),
            _ => verify(),
        };
        if !ok {
            return Err((StatusCode::UNAUTHORIZED, "wrong password".into(), "bad_credentials"));
        }
    }
    Ok(Admitted { station, version, new_registration })
}
