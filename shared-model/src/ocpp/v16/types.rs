//! OCPP 1.6 enumerations and composite types (OCPP 1.6 §7).

use serde::{Deserialize, Serialize};

/// RegistrationStatus (OCPP 1.6 §7.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegistrationStatus {
    Accepted,
    Pending,
    Rejected,
}
