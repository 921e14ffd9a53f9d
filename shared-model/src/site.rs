//! Site electrical vocabulary shared by the balancer, the simulators and (later) the hub:
//! the supply phases and how a charger is wired to them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A phase (line conductor) of the site's supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    L1,
    L2,
    L3,
}

impl Phase {
    /// L1, L2, L3.
    pub const ALL: [Phase; 3] = [Phase::L1, Phase::L2, Phase::L3];

    /// 0 for L1, 1 for L2, 2 for L3.
    pub fn index(self) -> usize {
        match self {
            Phase::L1 => 0,
            Phase::L2 => 1,
            Phase::L3 => 2,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::L1 => "L1",
            Phase::L2 => "L2",
            Phase::L3 => "L3",
        })
    }
}

impl FromStr for Phase {
    type Err = WiringError;

    /// `L1`, `L2`, `L3` (any case) or `1`, `2`, `3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "L1" | "1" => Ok(Phase::L1),
            "L2" | "2" => Ok(Phase::L2),
            "L3" | "3" => Ok(Phase::L3),
            other => Err(WiringError(format!("unknown phase \"{other}\", expected L1, L2 or L3"))),
        }
    }
}

/// A wiring that cannot be: no phase, more than three, a phase used twice, or a name that
/// is no phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid wiring: {0}")]
pub struct WiringError(String);

/// Which site phase feeds each charger phase. A 1-phase charger on L2 is `[L2]`; a
/// 3-phase charger installed with rotation L2-L3-L1 draws its phase 1 (the one a 1-phase
/// car charges on) from L2, phase 2 from L3 and phase 3 from L1 (installers rotate
/// chargers so that 1-phase cars spread over the site's phases). In configuration it is a
/// list of one to three distinct phases; as text `"L2"` or `"L2-L3-L1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<Phase>", into = "Vec<Phase>")]
pub struct Wiring {
    phases: [Phase; 3],
    count: usize,
}

impl Wiring {
    /// Three-phase, no rotation.
    pub const L1_L2_L3: Wiring = Wiring { phases: [Phase::L1, Phase::L2, Phase::L3], count: 3 };
    /// The usual 3-phase charger (same as [`Wiring::L1_L2_L3`]).
    pub const THREE_PHASE: Wiring = Wiring::L1_L2_L3;
    /// Three-phase, rotated once: the charger's phase 1 is the site's L2.
    pub const L2_L3_L1: Wiring = Wiring { phases: [Phase::L2, Phase::L3, Phase::L1], count: 3 };
    /// Three-phase, rotated twice: the charger's phase 1 is the site's L3.
    pub const L3_L1_L2: Wiring = Wiring { phases: [Phase::L3, Phase::L1, Phase::L2], count: 3 };

    /// A single-phase charger on `phase`.
    pub const fn single(phase: Phase) -> Wiring {
        Wiring { phases: [phase, phase, phase], count: 1 }
    }

    /// Charger phases 1 (, 2, 3) on the given site phases: one to three, distinct.
    pub fn try_new(phases: &[Phase]) -> Result<Wiring, WiringError> {
        if phases.is_empty() || phases.len() > 3 {
            return Err(WiringError("must list one to three site phases".into()));
        }
        for (i, p) in phases.iter().enumerate() {
            if phases[..i].contains(p) {
                return Err(WiringError(format!("lists site phase {p} twice")));
            }
        }
        let mut out = [phases[0]; 3];
        out[..phases.len()].copy_from_slice(phases);
        Ok(Wiring { phases: out, count: phases.len() })
    }

    /// A three-phase charger whose phases 1, 2, 3 are the site's `phases`.
    pub fn try_three(phases: [Phase; 3]) -> Result<Wiring, WiringError> {
        Wiring::try_new(&phases)
    }

    /// The site phases of the charger's phases 1 (, 2, 3).
    pub fn phases(&self) -> &[Phase] {
        &self.phases[..self.count]
    }

    /// Site phase of charger phase `i` (0-based), if the charger has that phase.
    pub fn site_phase(&self, charger_phase: usize) -> Option<Phase> {
        self.phases().get(charger_phase).copied()
    }

    /// Number of charger phases (1 to 3).
    pub fn phase_count(&self) -> usize {
        self.count
    }

    /// The site phases a load on the first `ev_phases` charger phases draws from (all of
    /// the charger's phases when `None`). A 1-phase car always charges on charger phase 1.
    pub fn site_phases(&self, ev_phases: Option<u8>) -> [bool; 3] {
        let n = ev_phases.map_or(3, |k| usize::from(k.clamp(1, 3)));
        let mut mask = [false; 3];
        for p in self.phases().iter().take(n) {
            mask[p.index()] = true;
        }
        mask
    }

    /// Adds a charger's per-phase currents (its phases 1, 2, 3) to `site` (L1, L2, L3).
    /// Current on charger phases the wiring does not have is not drawn.
    pub fn add_to(&self, charger: [f64; 3], site: &mut [f64; 3]) {
        for (phase, amps) in self.phases().iter().zip(charger) {
            site[phase.index()] += amps;
        }
    }
}

impl Default for Wiring {
    fn default() -> Self {
        Wiring::THREE_PHASE
    }
}

impl From<Phase> for Wiring {
    fn from(phase: Phase) -> Self {
        Wiring::single(phase)
    }
}

impl From<[Phase; 1]> for Wiring {
    fn from([phase]: [Phase; 1]) -> Self {
        Wiring::single(phase)
    }
}

impl TryFrom<Vec<Phase>> for Wiring {
    type Error = WiringError;
    fn try_from(v: Vec<Phase>) -> Result<Self, Self::Error> {
        Wiring::try_new(&v)
    }
}

impl TryFrom<[Phase; 3]> for Wiring {
    type Error = WiringError;
    fn try_from(phases: [Phase; 3]) -> Result<Self, Self::Error> {
        Wiring::try_three(phases)
    }
}

impl From<Wiring> for Vec<Phase> {
    fn from(w: Wiring) -> Self {
        w.phases().to_vec()
    }
}

impl FromStr for Wiring {
    type Err = WiringError;

    /// `"L2"` (single-phase) or `"L2-L3-L1"` (`,` also separates).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let phases = s.split(['-', ',']).map(Phase::from_str).collect::<Result<Vec<_>, _>>()?;
        Wiring::try_new(&phases)
    }
}

impl fmt::Display for Wiring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.phases().iter().map(Phase::to_string).collect();
        f.write_str(&names.join("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiring_rules() {
        let w: Wiring = "L2-L3-L1".parse().expect("valid");
        assert_eq!(w, Wiring::L2_L3_L1);
        assert_eq!(w.site_phase(0), Some(Phase::L2));
        assert_eq!(w.site_phases(Some(1)), [false, true, false], "a 1-phase car charges on charger phase 1");
        assert_eq!(Wiring::single(Phase::L3).site_phases(None), [false, false, true]);
        assert_eq!(Wiring::single(Phase::L3).site_phase(1), None);
        assert!(Wiring::try_new(&[]).is_err());
        assert!(Wiring::try_new(&[Phase::L1, Phase::L1]).is_err());
        assert!("L1-L4".parse::<Wiring>().is_err());
        assert_eq!(w.to_string(), "L2-L3-L1");
        let mut site = [0.0; 3];
        Wiring::single(Phase::L2).add_to([16.0, 16.0, 16.0], &mut site);
        w.add_to([1.0, 2.0, 3.0], &mut site);
        assert_eq!(site, [3.0, 17.0, 2.0]);
    }

    #[test]
    fn wiring_serde_is_a_list_of_phases() {
        let w: Wiring = serde_json::from_str(r#"["L3"]"#).expect("valid");
        assert_eq!(w, Wiring::single(Phase::L3));
        assert_eq!(serde_json::to_string(&Wiring::L3_L1_L2).expect("ser"), r#"["L3","L1","L2"]"#);
        assert!(serde_json::from_str::<Wiring>(r#"["L1","L1"]"#).is_err());
    }
}
