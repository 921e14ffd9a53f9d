//! Data-driven register maps: which register holds which quantity, how to read them in
//! few requests, and how to turn the registers into a [`MeterReading`].

use std::collections::BTreeMap;

use super::decode::{
    EncodeError, RegisterImage, Sentinels, ValueType, WordOrder, decode_scale_factor, decode_value, encode_value, fits,
};
use super::reading::{MeterReading, Quantity};
use crate::bus::RegisterFunction;

/// The most registers one Read Holding/Input Registers request may ask for (Modbus
/// application protocol specification, 6.3 and 6.4: 1 to 125).
pub const MAX_REGISTERS_PER_READ: u16 = 125;

/// A SunSpec-style scale factor register: the value is multiplied by 10^sf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleRegister {
    /// Register address of the scale factor (`sunssf`, int16).
    pub address: u16,
}

/// Where one quantity is and how to decode it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSpec {
    /// What the value is.
    pub quantity: Quantity,
    /// Address of the first register (0-based protocol address, not a "3xxxx" number).
    pub address: u16,
    /// Register encoding.
    pub value_type: ValueType,
    /// Fixed factor to the base unit (e.g. 1000 for kWh -> Wh, 0.1 for deci-volts).
    pub scale: f64,
    /// SunSpec scale factor register, applied on top of `scale`.
    pub scale_register: Option<ScaleRegister>,
}

impl ValueSpec {
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.value_type.width())
    }
}

/// One read request of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadRequest {
    /// Function code.
    pub function: RegisterFunction,
    /// First register.
    pub address: u16,
    /// Number of registers (1..=125).
    pub count: u16,
}

/// A meter's register layout, loaded from a TOML file (see [`RegisterMap::from_toml`] and
/// the files in `configs/meters/`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterMap {
    pub(crate) name: String,
    pub(crate) function: RegisterFunction,
    pub(crate) word_order: WordOrder,
    pub(crate) sentinels: Sentinels,
    pub(crate) max_registers_per_read: u16,
    pub(crate) max_gap: u16,
    pub(crate) values: Vec<ValueSpec>,
}

/// Registers a poll needed but did not get: the bus answered less than the plan asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("register {address} (0x{address:04X}) for {quantity} is missing from the response")]
pub struct DecodeError {
    /// The quantity that could not be decoded.
    pub quantity: Quantity,
    /// The first missing register.
    pub address: u16,
}

impl RegisterMap {
    /// Device name, e.g. "Eastron SDM630".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Function code of every read.
    pub fn function(&self) -> RegisterFunction {
        self.function
    }

    /// Word order of multi-register values.
    pub fn word_order(&self) -> WordOrder {
        self.word_order
    }

    /// "Not implemented" convention.
    pub fn sentinels(&self) -> Sentinels {
        self.sentinels
    }

    /// Largest read the device accepts.
    pub fn max_registers_per_read(&self) -> u16 {
        self.max_registers_per_read
    }

    /// Largest run of unmapped registers a read may span to save a request.
    pub fn max_gap(&self) -> u16 {
        self.max_gap
    }

    /// The mapped values, in file order.
    pub fn values(&self) -> &[ValueSpec] {
        &self.values
    }

    /// Whether the map provides `quantity`.
    pub fn provides(&self, quantity: Quantity) -> bool {
        self.values.iter().any(|v| v.quantity == quantity)
    }

    /// The same map with every address moved by `offset`, for SunSpec devices whose map
    /// starts at 0 or 50000 instead of the standard 40000. `None` if an address would
    /// leave 0..=65535.
    pub fn with_address_offset(&self, offset: i32) -> Option<RegisterMap> {
        let shift = |address: u16| -> Option<u16> { u16::try_from(i32::from(address) + offset).ok() };
        let mut moved = self.clone();
        for value in &mut moved.values {
            value.address = shift(value.address)?;
            // The last register must stay addressable too.
            value.address.checked_add(value.value_type.width() - 1)?;
            if let Some(sf) = &mut value.scale_register {
                sf.address = shift(sf.address)?;
            }
        }
        Some(moved)
    }

    /// The reads that fetch every mapped register: see [`read_plan_for`](Self::read_plan_for).
    pub fn read_plan(&self) -> Vec<ReadRequest> {
        self.plan(|_| true)
    }

    /// The fewest reads that fetch the registers of `quantities` (and their scale factor
    /// registers): adjacent registers are merged, gaps of up to
    /// [`max_gap`](Self::max_gap) unmapped registers are read across, and no read exceeds
    /// [`max_registers_per_read`](Self::max_registers_per_read). A value is never split
    /// across two reads. Empty when the map provides none of them.
    pub fn read_plan_for(&self, quantities: &[Quantity]) -> Vec<ReadRequest> {
        self.plan(|q| quantities.contains(&q))
    }

    fn plan(&self, wanted: impl Fn(Quantity) -> bool) -> Vec<ReadRequest> {
        // Register spans [start, end) as u32 so that 0xFFFF + width does not overflow.
        let mut spans: Vec<(u32, u32)> = Vec::new();
        for value in self.values.iter().filter(|v| wanted(v.quantity)) {
            spans.push((u32::from(value.address), value.end()));
            if let Some(sf) = value.scale_register {
                spans.push((u32::from(sf.address), u32::from(sf.address) + 1));
            }
        }
        spans.sort_unstable();
        spans.dedup();
        let max_len = u32::from(self.max_registers_per_read);
        let max_gap = u32::from(self.max_gap);
        let mut reads: Vec<(u32, u32)> = Vec::new();
        for (start, end) in spans {
            match reads.last_mut() {
                Some((read_start, read_end))
                    if start <= *read_end + max_gap && end.max(*read_end) - *read_start <= max_len =>
                {
                    *read_end = end.max(*read_end);
                }
                _ => reads.push((start, end)),
            }
        }
        reads
            .into_iter()
            .filter_map(|(start, end)| {
                Some(ReadRequest {
                    function: self.function,
                    address: u16::try_from(start).ok()?,
                    count: u16::try_from(end - start).ok()?,
                })
            })
            .collect()
    }

    /// Decodes every mapped value from `image`. Pure: no I/O.
    pub fn decode(&self, image: &RegisterImage) -> Result<MeterReading, DecodeError> {
        self.decode_only(image, &Quantity::ALL)
    }

    /// Decodes the mapped values of `quantities` from `image`; others stay `None`.
    pub fn decode_only(&self, image: &RegisterImage, quantities: &[Quantity]) -> Result<MeterReading, DecodeError> {
        let mut reading = MeterReading::default();
        for value in self.values.iter().filter(|v| quantities.contains(&v.quantity)) {
            let missing = |address| DecodeError { quantity: value.quantity, address };
            let words = image.get_range(value.address, value.value_type.width()).ok_or_else(|| {
                let first_missing = (0..value.value_type.width())
                    .map(|i| value.address.saturating_add(i))
                    .find(|a| image.get(*a).is_none())
                    .unwrap_or(value.address);
                missing(first_missing)
            })?;
            let exponent = match value.scale_register {
                None => Some(0),
                Some(sf) => decode_scale_factor(image.get(sf.address).ok_or_else(|| missing(sf.address))?),
            };
            let decoded = decode_value(&words, value.value_type, self.word_order, self.sentinels);
            let scaled = match (decoded, exponent) {
                (Some(raw), Some(exponent)) => Some(raw * value.scale * 10f64.powi(exponent)),
                _ => None,
            };
            reading.set(value.quantity, scaled);
        }
        Ok(reading)
    }

    /// The register image a device with this map would show for `reading`: the inverse of
    /// [`decode`](Self::decode), for simulators and tests.
    ///
    /// Scale factor registers get the smallest exponent in −3..=6 that lets every value
    /// sharing them fit its type (the finest resolution). Quantities the map lacks are
    /// ignored; `None` values are written as the "not implemented" marker.
    pub fn encode(&self, reading: &MeterReading) -> Result<RegisterImage, EncodeError> {
        let mut exponents: BTreeMap<u16, i32> = BTreeMap::new();
        for value in &self.values {
            let Some(sf) = value.scale_register else { continue };
            if exponents.contains_key(&sf.address) {
                continue;
            }
            let sharing: Vec<&ValueSpec> =
                self.values.iter().filter(|v| v.scale_register.is_some_and(|s| s.address == sf.address)).collect();
            let exponent = (-3..=6)
                .find(|exp| {
                    sharing.iter().all(|v| {
                        reading
                            .get(v.quantity)
                            .is_none_or(|x| fits(x / (v.scale * 10f64.powi(*exp)), v.value_type, self.sentinels))
                    })
                })
                .unwrap_or(0);
            exponents.insert(sf.address, exponent);
        }
        let mut image = RegisterImage::new();
        for (address, exponent) in &exponents {
            // -3..=6 always fits an i16; the cast reinterprets it as a register.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            image.insert(*address, &[*exponent as i16 as u16]);
        }
        for value in &self.values {
            let exponent = value.scale_register.and_then(|sf| exponents.get(&sf.address).copied()).unwrap_or(0);
            let raw = reading.get(value.quantity).map(|x| x / (value.scale * 10f64.powi(exponent)));
            image.insert(value.address, &encode_value(raw, value.value_type, self.word_order, self.sentinels)?);
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> RegisterMap {
        match RegisterMap::from_toml(text, "test.toml") {
            Ok(map) => map,
            Err(err) => panic!("{err}"),
        }
    }

    const HEADER: &str = "[meter]\nname = \"t\"\nfunction = \"holding\"\n";

    #[test]
    fn adjacent_registers_become_one_read_and_gaps_split_reads() {
        let m = map(&format!(
            "{HEADER}max_gap = 2\n\
             [[values]]\nquantity = \"current_l1\"\naddress = 10\ntype = \"f32\"\n\
             [[values]]\nquantity = \"current_l2\"\naddress = 12\ntype = \"f32\"\n\
             [[values]]\nquantity = \"current_l3\"\naddress = 16\ntype = \"f32\"\n\
             [[values]]\nquantity = \"frequency\"\naddress = 21\ntype = \"u16\"\n"
        ));
        let plan = m.read_plan();
        let reads: Vec<(u16, u16)> = plan.iter().map(|r| (r.address, r.count)).collect();
        // 10..14, gap of 2 (14, 15) bridged to 16..18; gap of 3 (18..21) not bridged.
        assert_eq!(reads, vec![(10, 8), (21, 1)]);
        assert!(plan.iter().all(|r| r.function == RegisterFunction::Holding));
    }

    #[test]
    fn reads_never_exceed_the_maximum_nor_split_a_value() {
        let m = map(&format!(
            "{HEADER}max_registers_per_read = 5\n\
             [[values]]\nquantity = \"current_l1\"\naddress = 0\ntype = \"i32\"\n\
             [[values]]\nquantity = \"current_l2\"\naddress = 2\ntype = \"i32\"\n\
             [[values]]\nquantity = \"current_l3\"\naddress = 4\ntype = \"i32\"\n\
             [[values]]\nquantity = \"frequency\"\naddress = 6\ntype = \"u16\"\n"
        ));
        let reads: Vec<(u16, u16)> = m.read_plan().iter().map(|r| (r.address, r.count)).collect();
        assert_eq!(reads, vec![(0, 4), (4, 3)]);
    }

    #[test]
    fn scale_factor_registers_are_read_with_their_values() {
        let m = map(&format!(
            "{HEADER}max_gap = 0\n\
             [[values]]\nquantity = \"power_total\"\naddress = 40087\ntype = \"i16\"\n\
             scale_register = {{ address = 40091, type = \"i16\" }}\n\
             [[values]]\nquantity = \"frequency\"\naddress = 40085\ntype = \"u16\"\n\
             scale_register = {{ address = 40086, type = \"i16\" }}\n"
        ));
        let reads: Vec<(u16, u16)> = m.read_plan().iter().map(|r| (r.address, r.count)).collect();
        assert_eq!(reads, vec![(40085, 3), (40091, 1)]);
        let only_hz: Vec<(u16, u16)> =
            m.read_plan_for(&[Quantity::Frequency]).iter().map(|r| (r.address, r.count)).collect();
        assert_eq!(only_hz, vec![(40085, 2)]);
        assert!(m.read_plan_for(&[Quantity::CurrentL1]).is_empty());
    }

    #[test]
    fn fixed_scale_and_sunspec_scale_factor_combine() {
        let m = map(&format!(
            "{HEADER}\
             [[values]]\nquantity = \"energy_import_total\"\naddress = 0\ntype = \"u32\"\nscale = 10.0\n\
             scale_register = {{ address = 2, type = \"i16\" }}\n\
             [[values]]\nquantity = \"power_factor_total\"\naddress = 3\ntype = \"i16\"\nscale = 0.01\n\
             scale_register = {{ address = 4, type = \"i16\" }}\n"
        ));
        let mut image = RegisterImage::new();
        // 1234 * 10 * 10^2 Wh; -9850 * 0.01 * 10^-2 = -0.985
        image.insert(0, &[0, 1234, 2, 0xD986, 0xFFFE]);
        let reading = m.decode(&image).ok();
        assert_eq!(reading.and_then(|r| r.energy_import_wh), Some(1_234_000.0));
        let pf = reading.and_then(|r| r.power_factor).unwrap_or_default();
        assert!((pf + 0.985).abs() < 1e-12, "{pf}");
    }

    #[test]
    fn unimplemented_scale_factor_makes_the_value_none() {
        let m = map(&format!(
            "{HEADER}[[values]]\nquantity = \"power_total\"\naddress = 0\ntype = \"i16\"\n\
             scale_register = {{ address = 1, type = \"i16\" }}\n"
        ));
        let mut image = RegisterImage::new();
        image.insert(0, &[500, 0x8000]);
        assert_eq!(m.decode(&image).map(|r| r.power_w), Ok(None));
    }

    #[test]
    fn missing_registers_are_a_decode_error() {
        let m = map(&format!("{HEADER}[[values]]\nquantity = \"power_total\"\naddress = 7\ntype = \"f32\"\n"));
        let mut image = RegisterImage::new();
        image.insert(7, &[0x45E7]);
        assert_eq!(m.decode(&image), Err(DecodeError { quantity: Quantity::PowerTotal, address: 8 }));
    }

    #[test]
    fn encode_picks_scale_factors_that_fit() {
        let m = map(&format!(
            "{HEADER}\
             [[values]]\nquantity = \"power_total\"\naddress = 0\ntype = \"i16\"\n\
             scale_register = {{ address = 4, type = \"i16\" }}\n\
             [[values]]\nquantity = \"power_l1\"\naddress = 1\ntype = \"i16\"\n\
             scale_register = {{ address = 4, type = \"i16\" }}\n"
        ));
        let reading =
            MeterReading { power_w: Some(22_080.0), powers_w: [Some(7_360.5), None, None], ..Default::default() };
        let image = m.encode(&reading).ok();
        // 10^-1 would need 220800, which is no i16: 10^0 is the finest that fits both.
        assert_eq!(image.as_ref().and_then(|i| i.get(4)), Some(0));
        let decoded = image.and_then(|i| m.decode(&i).ok());
        assert_eq!(decoded.and_then(|r| r.power_w), Some(22_080.0));
        assert_eq!(decoded.and_then(|r| r.powers_w[0]), Some(7_361.0)); // rounded to 1 W at 10^0
    }

    #[test]
    fn address_offset_moves_values_and_scale_registers() {
        let m = map(&format!(
            "{HEADER}[[values]]\nquantity = \"power_total\"\naddress = 40087\ntype = \"i16\"\n\
             scale_register = {{ address = 40091, type = \"i16\" }}\n"
        ));
        let moved = m.with_address_offset(-40_000);
        assert_eq!(moved.as_ref().map(|m| m.values()[0].address), Some(87));
        assert_eq!(moved.and_then(|m| m.values()[0].scale_register), Some(ScaleRegister { address: 91 }));
        assert!(m.with_address_offset(30_000).is_none());
    }
}
