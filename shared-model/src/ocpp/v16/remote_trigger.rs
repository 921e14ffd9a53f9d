//! Remote Trigger profile messages (OCPP 1.6 §3.14). The security whitepaper's
//! ExtendedTriggerMessage is in [`super::security`].

use super::types::{MessageTrigger, TriggerMessageStatus};
use serde::{Deserialize, Serialize};

/// TriggerMessage.req (OCPP 1.6 §6.51): ask the charger to send a message now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerMessageRequest {
    pub requested_message: MessageTrigger,
    /// For connector-specific messages (MeterValues, StatusNotification); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<u32>,
}

/// TriggerMessage.conf (OCPP 1.6 §6.52).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerMessageResponse {
    pub status: TriggerMessageStatus,
}

ocpp_action!("TriggerMessage", TriggerMessageRequest, TriggerMessageResponse);
