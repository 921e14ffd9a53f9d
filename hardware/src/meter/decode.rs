//! Pure decoders (and the matching encoders) from 16-bit Modbus registers to numbers.
//!
//! No I/O here: registers in, numbers out. Modbus sends each register big-endian (high
//! byte first); multi-register values differ between devices only in the order of the
//! *words*, which [`WordOrder`] names.

use std::collections::BTreeMap;
use std::fmt;

/// The order of 16-bit words in a value that spans several registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WordOrder {
    /// Most significant word first, at the lowest address ("ABCD"): Eastron, Janitza, ABB,
    /// SunSpec.
    Big,
    /// Least significant word first ("CDAB"): Carlo Gavazzi.
    Little,
}

impl WordOrder {
    /// The name used in register map files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Big => "big",
            Self::Little => "little",
        }
    }
}

/// How a device marks a value it does not have (a phase it does not measure, a register the
/// model does not implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sentinels {
    /// SunSpec "not implemented" values: the most negative value of a signed type (0x8000,
    /// 0x8000_0000, …) and all bits set for an unsigned type (0xFFFF, …). Accumulators
    /// (`acc32`, `acc64`) have none: SunSpec uses 0 there, which is also a real reading.
    Sunspec,
    /// The largest value of the type: 0x7FFF… for signed and all bits set for unsigned
    /// types (ABB B-series meters).
    Max,
    /// The device never marks values: every integer is a reading.
    None,
}

impl Sentinels {
    /// The name used in register map files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sunspec => "sunspec",
            Self::Max => "max",
            Self::None => "none",
        }
    }
}

/// The encoding of one value in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Unsigned 16-bit integer, one register.
    U16,
    /// Signed 16-bit integer (two's complement), one register.
    I16,
    /// Unsigned 32-bit integer, two registers.
    U32,
    /// Signed 32-bit integer, two registers.
    I32,
    /// Unsigned 64-bit integer, four registers.
    U64,
    /// Signed 64-bit integer, four registers.
    I64,
    /// IEEE-754 single precision, two registers.
    F32,
    /// IEEE-754 double precision, four registers.
    F64,
    /// SunSpec 32-bit accumulator: unsigned, never a "not implemented" marker.
    Acc32,
    /// SunSpec 64-bit accumulator: unsigned, never a "not implemented" marker.
    Acc64,
}

impl ValueType {
    /// Every type, in the order the loader lists them in error messages.
    pub const ALL: [ValueType; 10] = [
        Self::F32,
        Self::F64,
        Self::I16,
        Self::U16,
        Self::I32,
        Self::U32,
        Self::I64,
        Self::U64,
        Self::Acc32,
        Self::Acc64,
    ];

    /// The name used in register map files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Acc32 => "acc32",
            Self::Acc64 => "acc64",
        }
    }

    /// Parses a name from a register map file.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// How many 16-bit registers a value occupies.
    pub fn width(self) -> u16 {
        match self {
            Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 | Self::Acc32 => 2,
            Self::U64 | Self::I64 | Self::F64 | Self::Acc64 => 4,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64)
    }

    /// Smallest and largest integer the type holds (for floats: the finite range).
    fn range(self) -> (f64, f64) {
        match self {
            Self::U16 => (0.0, f64::from(u16::MAX)),
            Self::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            Self::U32 | Self::Acc32 => (0.0, f64::from(u32::MAX)),
            Self::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            // 2^64 and 2^63 are exactly representable; the bounds are exclusive of them below.
            Self::U64 | Self::Acc64 => (0.0, 18_446_744_073_709_551_615.0),
            Self::I64 => (-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_807.0),
            Self::F32 => (f64::from(f32::MIN), f64::from(f32::MAX)),
            Self::F64 => (f64::MIN, f64::MAX),
        }
    }

    /// The raw bit pattern that marks "not available" under `sentinels`, if any.
    fn sentinel(self, sentinels: Sentinels) -> Option<u64> {
        match (sentinels, self) {
            (_, Self::F32 | Self::F64 | Self::Acc32 | Self::Acc64) | (Sentinels::None, _) => None,
            (_, Self::U16) => Some(0xFFFF),
            (_, Self::U32) => Some(0xFFFF_FFFF),
            (_, Self::U64) => Some(u64::MAX),
            (Sentinels::Sunspec, Self::I16) => Some(0x8000),
            (Sentinels::Sunspec, Self::I32) => Some(0x8000_0000),
            (Sentinels::Sunspec, Self::I64) => Some(0x8000_0000_0000_0000),
            (Sentinels::Max, Self::I16) => Some(0x7FFF),
            (Sentinels::Max, Self::I32) => Some(0x7FFF_FFFF),
            (Sentinels::Max, Self::I64) => Some(0x7FFF_FFFF_FFFF_FFFF),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Joins 1, 2 or 4 registers into one bit pattern, most significant bits first.
fn join(words: &[u16], order: WordOrder) -> u64 {
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(*w);
    match order {
        WordOrder::Big => words.iter().fold(0, fold),
        WordOrder::Little => words.iter().rev().fold(0, fold),
    }
}

/// Splits a bit pattern into `width` registers in the given word order.
fn split(bits: u64, width: u16, order: WordOrder) -> Vec<u16> {
    // Truncation to the low 16 bits is the point of the mask.
    #[allow(clippy::cast_possible_truncation)]
    let mut words: Vec<u16> = (0..width).rev().map(|i| ((bits >> (16 * u32::from(i))) & 0xFFFF) as u16).collect();
    if order == WordOrder::Little {
        words.reverse();
    }
    words
}

/// Decodes one value from exactly `ty.width()` registers.
///
/// Returns `None` for NaN or infinite floats and for the "not implemented" marker of
/// `sentinels`, and when `words` has the wrong length.
///
/// ```
/// use hardware::meter::{decode_value, Sentinels, ValueType, WordOrder};
/// // 230.5 V as float32, high word first (Eastron).
/// assert_eq!(decode_value(&[0x4366, 0x8000], ValueType::F32, WordOrder::Big, Sentinels::Sunspec), Some(230.5));
/// // SunSpec int16 "not implemented".
/// assert_eq!(decode_value(&[0x8000], ValueType::I16, WordOrder::Big, Sentinels::Sunspec), None);
/// ```
// The `as` casts below reinterpret bit patterns of exactly the width of the type.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_precision_loss)]
pub fn decode_value(words: &[u16], ty: ValueType, order: WordOrder, sentinels: Sentinels) -> Option<f64> {
    if words.len() != usize::from(ty.width()) {
        return None;
    }
    let bits = join(words, order);
    if ty.sentinel(sentinels) == Some(bits) {
        return None;
    }
    let value = match ty {
        ValueType::U16 | ValueType::U32 | ValueType::U64 | ValueType::Acc32 | ValueType::Acc64 => bits as f64,
        ValueType::I16 => f64::from(bits as u16 as i16),
        ValueType::I32 => f64::from(bits as u32 as i32),
        ValueType::I64 => bits as i64 as f64,
        ValueType::F32 => f64::from(f32::from_bits(bits as u32)),
        ValueType::F64 => f64::from_bits(bits),
    };
    value.is_finite().then_some(value)
}

/// Decodes a SunSpec scale factor (`sunssf`, int16): the value is multiplied by 10^sf.
///
/// `None` for the "not implemented" marker 0x8000 and for exponents outside −10..=10, which
/// the SunSpec specification does not allow.
pub fn decode_scale_factor(word: u16) -> Option<i32> {
    // Reinterpreting the register as two's complement is the point.
    #[allow(clippy::cast_possible_wrap)]
    let sf = i32::from(word as i16);
    (word != 0x8000 && (-10..=10).contains(&sf)).then_some(sf)
}

/// Why a value cannot be written into registers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The value does not fit the register type.
    #[error("{value} does not fit in {ty}")]
    OutOfRange {
        /// The value, already divided by the scale.
        value: f64,
        /// The register type.
        ty: ValueType,
    },
    /// The value would read back as the "not implemented" marker.
    #[error("{value} is the \"not implemented\" marker of {ty}")]
    Sentinel {
        /// The value, already divided by the scale.
        value: f64,
        /// The register type.
        ty: ValueType,
    },
}

/// Encodes `value` (already divided by the scale) as `ty` in the given word order:
/// the inverse of [`decode_value`], for simulators and tests. Integers are rounded.
/// `None` encodes the "not implemented" marker (NaN for floats, 0 where the type has none).
// Casts are guarded by the range check above each of them.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn encode_value(
    value: Option<f64>,
    ty: ValueType,
    order: WordOrder,
    sentinels: Sentinels,
) -> Result<Vec<u16>, EncodeError> {
    let width = ty.width();
    let Some(value) = value else {
        let bits = match ty {
            ValueType::F32 => u64::from(f32::NAN.to_bits()),
            ValueType::F64 => f64::NAN.to_bits(),
            _ => ty.sentinel(sentinels).unwrap_or(0),
        };
        return Ok(split(bits, width, order));
    };
    let bits = if ty.is_float() {
        let (min, max) = ty.range();
        if !value.is_finite() || value < min || value > max {
            return Err(EncodeError::OutOfRange { value, ty });
        }
        match ty {
            ValueType::F32 => u64::from((value as f32).to_bits()),
            _ => value.to_bits(),
        }
    } else {
        let rounded = value.round();
        let (min, max) = ty.range();
        // `max` of the 64-bit types rounds up to 2^64 / 2^63 as f64: exclude it.
        let too_big = if width == 4 { rounded >= max } else { rounded > max };
        if !rounded.is_finite() || rounded < min || too_big {
            return Err(EncodeError::OutOfRange { value, ty });
        }
        let bits = match ty {
            ValueType::I16 => u64::from(rounded as i16 as u16),
            ValueType::I32 => u64::from(rounded as i32 as u32),
            ValueType::I64 => rounded as i64 as u64,
            _ => rounded as u64,
        };
        if ty.sentinel(sentinels) == Some(bits) {
            return Err(EncodeError::Sentinel { value, ty });
        }
        bits
    };
    Ok(split(bits, width, order))
}

/// Whether `value` (already divided by the scale) can be encoded as `ty` without error.
pub(crate) fn fits(value: f64, ty: ValueType, sentinels: Sentinels) -> bool {
    encode_value(Some(value), ty, WordOrder::Big, sentinels).is_ok()
}

/// A sparse copy of a device's registers: what a poll read, or what a simulator serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterImage {
    registers: BTreeMap<u16, u16>,
}

impl RegisterImage {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores consecutive registers starting at `address` (wrapping is not allowed: words
    /// past 0xFFFF are dropped).
    pub fn insert(&mut self, address: u16, words: &[u16]) {
        for (addr, word) in (address..=u16::MAX).zip(words) {
            self.registers.insert(addr, *word);
        }
    }

    /// One register, if present.
    pub fn get(&self, address: u16) -> Option<u16> {
        self.registers.get(&address).copied()
    }

    /// `count` consecutive registers, if all are present.
    pub fn get_range(&self, address: u16, count: u16) -> Option<Vec<u16>> {
        (0..count).map(|i| address.checked_add(i).and_then(|a| self.get(a))).collect()
    }

    /// `count` consecutive registers, absent ones read as 0 (as most meters answer for
    /// reserved registers inside a block): for simulators.
    pub fn read(&self, address: u16, count: u16) -> Vec<u16> {
        (0..count).map(|i| address.checked_add(i).and_then(|a| self.get(a)).unwrap_or(0)).collect()
    }

    /// Number of registers present.
    pub fn len(&self) -> usize {
        self.registers.len()
    }

    /// Whether no register is present.
    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: WordOrder = WordOrder::Big;
    const L: WordOrder = WordOrder::Little;
    const SS: Sentinels = Sentinels::Sunspec;

    #[test]
    fn f32_in_both_word_orders() {
        // 7400.0 = 0x45E74000
        assert_eq!(decode_value(&[0x45E7, 0x4000], ValueType::F32, B, SS), Some(7400.0));
        assert_eq!(decode_value(&[0x4000, 0x45E7], ValueType::F32, L, SS), Some(7400.0));
        // -1.5 = 0xBFC00000
        assert_eq!(decode_value(&[0xBFC0, 0x0000], ValueType::F32, B, SS), Some(-1.5));
    }

    #[test]
    fn f64_in_both_word_orders() {
        let bits = 12_345.678_f64.to_bits();
        let words = split(bits, 4, B);
        assert_eq!(decode_value(&words, ValueType::F64, B, SS), Some(12_345.678));
        let mut little = words.clone();
        little.reverse();
        assert_eq!(decode_value(&little, ValueType::F64, L, SS), Some(12_345.678));
    }

    #[test]
    fn nan_and_infinity_are_none() {
        assert_eq!(decode_value(&[0x7FC0, 0x0000], ValueType::F32, B, SS), None);
        assert_eq!(decode_value(&[0x7F80, 0x0000], ValueType::F32, B, SS), None);
        assert_eq!(decode_value(&[0x7FF8, 0, 0, 0], ValueType::F64, B, Sentinels::None), None);
    }

    #[test]
    fn sixteen_bit_integers() {
        assert_eq!(decode_value(&[0xFFFE], ValueType::I16, B, SS), Some(-2.0));
        assert_eq!(decode_value(&[0xFFFE], ValueType::U16, B, SS), Some(65_534.0));
        assert_eq!(decode_value(&[0x7FFF], ValueType::I16, B, SS), Some(32_767.0));
        // Word order does not matter for one register.
        assert_eq!(decode_value(&[0x0102], ValueType::U16, L, SS), Some(258.0));
    }

    #[test]
    fn thirty_two_bit_integers_in_both_word_orders() {
        // 100_000 = 0x0001_86A0
        assert_eq!(decode_value(&[0x0001, 0x86A0], ValueType::U32, B, SS), Some(100_000.0));
        assert_eq!(decode_value(&[0x86A0, 0x0001], ValueType::U32, L, SS), Some(100_000.0));
        // -100_000 = 0xFFFE_7960
        assert_eq!(decode_value(&[0xFFFE, 0x7960], ValueType::I32, B, SS), Some(-100_000.0));
        assert_eq!(decode_value(&[0x7960, 0xFFFE], ValueType::I32, L, SS), Some(-100_000.0));
        assert_eq!(decode_value(&[0x8000, 0x0000], ValueType::Acc32, B, SS), Some(2_147_483_648.0));
    }

    #[test]
    fn sixty_four_bit_integers_in_both_word_orders() {
        // 123_456_789_012 = 0x0000_001C_BE99_1A14
        let big = [0x0000, 0x001C, 0xBE99, 0x1A14];
        assert_eq!(decode_value(&big, ValueType::U64, B, SS), Some(123_456_789_012.0));
        assert_eq!(decode_value(&[0x1A14, 0xBE99, 0x001C, 0x0000], ValueType::U64, L, SS), Some(123_456_789_012.0));
        assert_eq!(decode_value(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], ValueType::I64, B, SS), Some(-2.0));
        assert_eq!(decode_value(&big, ValueType::Acc64, B, SS), Some(123_456_789_012.0));
    }

    #[test]
    fn sunspec_sentinels_are_none() {
        assert_eq!(decode_value(&[0x8000], ValueType::I16, B, SS), None);
        assert_eq!(decode_value(&[0xFFFF], ValueType::U16, B, SS), None);
        assert_eq!(decode_value(&[0x8000, 0x0000], ValueType::I32, B, SS), None);
        assert_eq!(decode_value(&[0x0000, 0x8000], ValueType::I32, L, SS), None);
        assert_eq!(decode_value(&[0xFFFF, 0xFFFF], ValueType::U32, B, SS), None);
        assert_eq!(decode_value(&[0x8000, 0, 0, 0], ValueType::I64, B, SS), None);
        assert_eq!(decode_value(&[0xFFFF; 4], ValueType::U64, B, SS), None);
        // Accumulators have no marker; 0 is a reading.
        assert_eq!(decode_value(&[0, 0], ValueType::Acc32, B, SS), Some(0.0));
        assert_eq!(decode_value(&[0xFFFF, 0xFFFF], ValueType::Acc32, B, SS), Some(4_294_967_295.0));
    }

    #[test]
    fn max_sentinels_are_none_and_sunspec_ones_are_readings() {
        let m = Sentinels::Max;
        assert_eq!(decode_value(&[0x7FFF], ValueType::I16, B, m), None);
        assert_eq!(decode_value(&[0x8000], ValueType::I16, B, m), Some(-32_768.0));
        assert_eq!(decode_value(&[0x7FFF, 0xFFFF], ValueType::I32, B, m), None);
        assert_eq!(decode_value(&[0xFFFF; 4], ValueType::U64, B, m), None);
        assert_eq!(decode_value(&[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], ValueType::I64, B, m), None);
    }

    #[test]
    fn no_sentinels_means_every_integer_is_a_reading() {
        let n = Sentinels::None;
        assert_eq!(decode_value(&[0xFFFF], ValueType::U16, B, n), Some(65_535.0));
        assert_eq!(decode_value(&[0x8000], ValueType::I16, B, n), Some(-32_768.0));
    }

    #[test]
    fn wrong_number_of_words_is_none() {
        assert_eq!(decode_value(&[1], ValueType::F32, B, SS), None);
        assert_eq!(decode_value(&[1, 2, 3], ValueType::U32, B, SS), None);
    }

    #[test]
    fn scale_factors() {
        assert_eq!(decode_scale_factor(0xFFFE), Some(-2));
        assert_eq!(decode_scale_factor(3), Some(3));
        assert_eq!(decode_scale_factor(0x8000), None);
        assert_eq!(decode_scale_factor(11), None);
        assert_eq!(decode_scale_factor(0xFFF5), None); // -11
    }

    #[test]
    fn encode_is_the_inverse_of_decode_for_every_type_and_order() {
        for ty in ValueType::ALL {
            for order in [B, L] {
                for value in [0.0, 1.0, 1234.0, -1234.0, 65_000.0] {
                    let Ok(words) = encode_value(Some(value), ty, order, SS) else {
                        // Negative or too large for the type: must be a range error.
                        assert!(value < 0.0 || ty.width() == 1, "{ty} {value}");
                        continue;
                    };
                    assert_eq!(words.len(), usize::from(ty.width()));
                    assert_eq!(decode_value(&words, ty, order, SS), Some(value), "{ty} {order:?} {value}");
                }
                let none = encode_value(None, ty, order, SS);
                let decoded = none.map(|w| decode_value(&w, ty, order, SS));
                let expected = if matches!(ty, ValueType::Acc32 | ValueType::Acc64) { Some(0.0) } else { None };
                assert_eq!(decoded, Ok(expected), "{ty}");
            }
        }
    }

    #[test]
    fn encode_rejects_out_of_range_and_sentinels() {
        assert!(matches!(encode_value(Some(70_000.0), ValueType::U16, B, SS), Err(EncodeError::OutOfRange { .. })));
        assert!(matches!(encode_value(Some(-1.0), ValueType::U32, B, SS), Err(EncodeError::OutOfRange { .. })));
        assert!(matches!(encode_value(Some(-32_768.0), ValueType::I16, B, SS), Err(EncodeError::Sentinel { .. })));
        assert!(encode_value(Some(-32_768.0), ValueType::I16, B, Sentinels::Max).is_ok());
        assert!(matches!(encode_value(Some(f64::NAN), ValueType::F32, B, SS), Err(EncodeError::OutOfRange { .. })));
    }

    #[test]
    fn register_image_ranges() {
        let mut image = RegisterImage::new();
        image.insert(10, &[1, 2, 3]);
        assert_eq!(image.get_range(10, 3), Some(vec![1, 2, 3]));
        assert_eq!(image.get_range(11, 3), None);
        assert_eq!(image.read(11, 3), vec![2, 3, 0]);
        image.insert(u16::MAX, &[9, 9]);
        assert_eq!(image.len(), 4);
        assert_eq!(image.get_range(u16::MAX, 2), None);
    }
}
