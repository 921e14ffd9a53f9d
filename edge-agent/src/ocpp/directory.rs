//! The in-memory view of which stations exist, their registration and password hash,
//! consulted during the WebSocket handshake (which cannot wait on the database). The
//! store is the source of truth; every change goes to the store first, then here.

use crate::chargers::{Registration, StationAuth};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
pub struct Directory {
    stations: RwLock<HashMap<String, StationAuth>>,
}

impl Directory {
    pub fn get(&self, station: &str) -> Option<StationAuth> {
        self.stations.read().ok().and_then(|m| m.get(station).cloned())
    }

    pub fn set(&self, station: &str, auth: StationAuth) {
        if let Ok(mut m) = self.stations.write() {
            m.insert(station.to_owned(), auth);
        }
    }

    /// The station's registration, `Pending` when unknown.
    pub fn registration(&self, station: &str) -> Registration {
        self.get(station).map(|a| a.registration).unwrap_or(Registration::Pending)
    }

    pub fn replace_all(&self, all: HashMap<String, StationAuth>) {
        if let Ok(mut m) = self.stations.write() {
            *m = all;
        }
    }
}
