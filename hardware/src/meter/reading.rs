//! What a meter measures: the [`Quantity`] vocabulary of register maps and the
//! [`MeterReading`] a poll produces, in base units.

use std::fmt;

/// A measured quantity a register map can provide. Each has a fixed base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    /// Total active power, W.
    PowerTotal,
    /// Active power of L1, W.
    PowerL1,
    /// Active power of L2, W.
    PowerL2,
    /// Active power of L3, W.
    PowerL3,
    /// Current of L1, A.
    CurrentL1,
    /// Current of L2, A.
    CurrentL2,
    /// Current of L3, A.
    CurrentL3,
    /// Line-to-neutral voltage of L1, V.
    VoltageL1,
    /// Line-to-neutral voltage of L2, V.
    VoltageL2,
    /// Line-to-neutral voltage of L3, V.
    VoltageL3,
    /// Line-to-line voltage L1–L2, V.
    VoltageL1L2,
    /// Line-to-line voltage L2–L3, V.
    VoltageL2L3,
    /// Line-to-line voltage L3–L1, V.
    VoltageL3L1,
    /// Total imported active energy, Wh.
    EnergyImportTotal,
    /// Total exported active energy, Wh.
    EnergyExportTotal,
    /// Frequency, Hz.
    Frequency,
    /// Total reactive power, var.
    ReactivePowerTotal,
    /// Total apparent power, VA.
    ApparentPowerTotal,
    /// Total power factor, −1..1.
    PowerFactorTotal,
}

impl Quantity {
    /// Every quantity, in the order error messages list them.
    pub const ALL: [Quantity; 19] = [
        Self::PowerTotal,
        Self::PowerL1,
        Self::PowerL2,
        Self::PowerL3,
        Self::CurrentL1,
        Self::CurrentL2,
        Self::CurrentL3,
        Self::VoltageL1,
        Self::VoltageL2,
        Self::VoltageL3,
        Self::VoltageL1L2,
        Self::VoltageL2L3,
        Self::VoltageL3L1,
        Self::EnergyImportTotal,
        Self::EnergyExportTotal,
        Self::Frequency,
        Self::ReactivePowerTotal,
        Self::ApparentPowerTotal,
        Self::PowerFactorTotal,
    ];

    /// The name used in register map files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PowerTotal => "power_total",
            Self::PowerL1 => "power_l1",
            Self::PowerL2 => "power_l2",
            Self::PowerL3 => "power_l3",
            Self::CurrentL1 => "current_l1",
            Self::CurrentL2 => "current_l2",
            Self::CurrentL3 => "current_l3",
            Self::VoltageL1 => "voltage_l1",
            Self::VoltageL2 => "voltage_l2",
            Self::VoltageL3 => "voltage_l3",
            Self::VoltageL1L2 => "voltage_l1_l2",
            Self::VoltageL2L3 => "voltage_l2_l3",
            Self::VoltageL3L1 => "voltage_l3_l1",
            Self::EnergyImportTotal => "energy_import_total",
            Self::EnergyExportTotal => "energy_export_total",
            Self::Frequency => "frequency",
            Self::ReactivePowerTotal => "reactive_power_total",
            Self::ApparentPowerTotal => "apparent_power_total",
            Self::PowerFactorTotal => "power_factor_total",
        }
    }

    /// Parses a name from a register map file.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == name)
    }

    /// The base unit the decoded value is in.
    pub fn unit(self) -> &'static str {
        match self {
            Self::PowerTotal | Self::PowerL1 | Self::PowerL2 | Self::PowerL3 => "W",
            Self::CurrentL1 | Self::CurrentL2 | Self::CurrentL3 => "A",
            Self::VoltageL1
            | Self::VoltageL2
            | Self::VoltageL3
            | Self::VoltageL1L2
            | Self::VoltageL2L3
            | Self::VoltageL3L1 => "V",
            Self::EnergyImportTotal | Self::EnergyExportTotal => "Wh",
            Self::Frequency => "Hz",
            Self::ReactivePowerTotal => "var",
            Self::ApparentPowerTotal => "VA",
            Self::PowerFactorTotal => "1",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One poll of a meter, in base units: W, A, V, Wh, Hz, var, VA.
///
/// `None` means the map does not provide the quantity or the device reported it as not
/// available (NaN or a "not implemented" marker): never a made-up zero.
///
/// Sign convention: active power is positive in the meter's *import* direction (the
/// direction `energy_import_wh` counts) and negative when exporting. Maps of PV inverters
/// therefore give generation as negative power and count it as export energy.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MeterReading {
    /// Total active power, W.
    pub power_w: Option<f64>,
    /// Active power per phase L1, L2, L3, W.
    pub powers_w: [Option<f64>; 3],
    /// Current per phase L1, L2, L3, A.
    pub currents_a: [Option<f64>; 3],
    /// Line-to-neutral voltage per phase L1, L2, L3, V.
    pub voltages_v: [Option<f64>; 3],
    /// Line-to-line voltages L1–L2, L2–L3, L3–L1, V.
    pub line_voltages_v: [Option<f64>; 3],
    /// Total imported active energy, Wh.
    pub energy_import_wh: Option<f64>,
    /// Total exported active energy, Wh.
    pub energy_export_wh: Option<f64>,
    /// Frequency, Hz.
    pub frequency_hz: Option<f64>,
    /// Total reactive power, var.
    pub reactive_power_var: Option<f64>,
    /// Total apparent power, VA.
    pub apparent_power_va: Option<f64>,
    /// Total power factor.
    pub power_factor: Option<f64>,
}

impl MeterReading {
    fn slot(&mut self, quantity: Quantity) -> &mut Option<f64> {
        match quantity {
            Quantity::PowerTotal => &mut self.power_w,
            Quantity::PowerL1 => &mut self.powers_w[0],
            Quantity::PowerL2 => &mut self.powers_w[1],
            Quantity::PowerL3 => &mut self.powers_w[2],
            Quantity::CurrentL1 => &mut self.currents_a[0],
            Quantity::CurrentL2 => &mut self.currents_a[1],
            Quantity::CurrentL3 => &mut self.currents_a[2],
            Quantity::VoltageL1 => &mut self.voltages_v[0],
            Quantity::VoltageL2 => &mut self.voltages_v[1],
            Quantity::VoltageL3 => &mut self.voltages_v[2],
            Quantity::VoltageL1L2 => &mut self.line_voltages_v[0],
            Quantity::VoltageL2L3 => &mut self.line_voltages_v[1],
            Quantity::VoltageL3L1 => &mut self.line_voltages_v[2],
            Quantity::EnergyImportTotal => &mut self.energy_import_wh,
            Quantity::EnergyExportTotal => &mut self.energy_export_wh,
            Quantity::Frequency => &mut self.frequency_hz,
            Quantity::ReactivePowerTotal => &mut self.reactive_power_var,
            Quantity::ApparentPowerTotal => &mut self.apparent_power_va,
            Quantity::PowerFactorTotal => &mut self.power_factor,
        }
    }

    /// The value of one quantity.
    pub fn get(&self, quantity: Quantity) -> Option<f64> {
        let mut copy = *self;
        *copy.slot(quantity)
    }

    /// Sets the value of one quantity.
    pub fn set(&mut self, quantity: Quantity, value: Option<f64>) {
        *self.slot(quantity) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_quantity_has_its_own_slot() {
        let mut reading = MeterReading::default();
        for (i, q) in Quantity::ALL.into_iter().enumerate() {
            assert_eq!(Quantity::from_name(q.as_str()), Some(q));
            reading.set(q, Some(i as f64));
        }
        for (i, q) in Quantity::ALL.into_iter().enumerate() {
            assert_eq!(reading.get(q), Some(i as f64), "{q}");
        }
        assert_eq!(Quantity::from_name("power"), None);
    }
}
