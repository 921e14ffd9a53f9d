//! Reservation profile messages (OCPP 1.6 §3.11).

use super::strings::IdToken;
use super::types::{CancelReservationStatus, ReservationStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- CancelReservation

/// CancelReservation.req (OCPP 1.6 §6.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReservationRequest {
    pub reservation_id: i32,
}

/// CancelReservation.conf (OCPP 1.6 §6.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReservationResponse {
    pub status: CancelReservationStatus,
}

ocpp_action!("CancelReservation", CancelReservationRequest, CancelReservationResponse);

// ---------------------------------------------------------------- ReserveNow

/// ReserveNow.req (OCPP 1.6 §6.37).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveNowRequest {
    /// 0 reserves any connector (`ReserveConnectorZeroSupported`).
    pub connector_id: u32,
    pub expiry_date: DateTime<Utc>,
    pub id_tag: IdToken,
    /// Tags with this parent may also use the reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id_tag: Option<IdToken>,
    /// Chosen by the central system; a known id replaces that reservation.
    pub reservation_id: i32,
}

/// ReserveNow.conf (OCPP 1.6 §6.38).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveNowResponse {
    pub status: ReservationStatus,
}

ocpp_action!("ReserveNow", ReserveNowRequest, ReserveNowResponse);
