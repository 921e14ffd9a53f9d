//! Loading and validating register map files (TOML).
//!
//! The file is walked by hand rather than through serde so that every error can name the
//! file, the line and the key path (`values[3].type`) with the reason, as `check-config`
//! promises installers.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::decode::{Sentinels, ValueType, WordOrder};
use super::map::{MAX_REGISTERS_PER_READ, RegisterMap, ScaleRegister, ValueSpec};
use super::reading::Quantity;
use crate::bus::RegisterFunction;

/// A register map file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MapError {
    /// The file (or the origin name given to [`RegisterMap::from_toml`]).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Key path such as `meter.word_order` or `values[3].type`, when the error is about a key.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

type Entry<'t, 'i> = &'t Spanned<DeValue<'i>>;

struct Loader<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Loader<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn error(&self, span: Option<&Range<usize>>, key: Option<&str>, reason: impl Into<String>) -> MapError {
        MapError {
            file: self.origin.to_owned(),
            line: span.map(|s| self.line(s)),
            key: key.map(str::to_owned),
            reason: reason.into(),
        }
    }

    fn at(&self, entry: Entry<'_, '_>, key: &str, reason: impl Into<String>) -> MapError {
        self.error(Some(&entry.span()), Some(key), reason)
    }

    /// The entries of a table, rejecting keys not in `allowed` (catches typos).
    fn entries<'t, 'i>(
        &self,
        table: &'t DeTable<'i>,
        path: &str,
        allowed: &[&str],
    ) -> Result<HashMap<String, Entry<'t, 'i>>, MapError> {
        let mut out = HashMap::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !allowed.contains(&name) {
                let full = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
                return Err(self.error(
                    Some(&key.span()),
                    Some(&full),
                    format!("unknown key, expected one of {}", allowed.join(", ")),
                ));
            }
            out.insert(name.to_owned(), value);
        }
        Ok(out)
    }

    fn table<'t, 'i>(&self, entry: Entry<'t, 'i>, key: &str) -> Result<&'t DeTable<'i>, MapError> {
        match entry.get_ref() {
            DeValue::Table(table) => Ok(table),
            other => Err(self.at(entry, key, format!("expected a table, found {}", other.type_str()))),
        }
    }

    fn string<'t>(&self, entry: Entry<'t, '_>, key: &str) -> Result<&'t str, MapError> {
        match entry.get_ref() {
            DeValue::String(s) => Ok(s),
            other => Err(self.at(entry, key, format!("expected a string, found {}", other.type_str()))),
        }
    }

    fn integer(&self, entry: Entry<'_, '_>, key: &str, min: i64, max: i64) -> Result<i64, MapError> {
        let value = match entry.get_ref() {
            DeValue::Integer(int) => i64::from_str_radix(int.as_str(), int.radix()).ok(),
            other => return Err(self.at(entry, key, format!("expected an integer, found {}", other.type_str()))),
        };
        match value {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(self.at(entry, key, format!("must be between {min} and {max}"))),
        }
    }

    fn address(&self, entry: Entry<'_, '_>, key: &str) -> Result<u16, MapError> {
        let value = self.integer(entry, key, 0, i64::from(u16::MAX))?;
        u16::try_from(value).map_err(|_| self.at(entry, key, "must be between 0 and 65535"))
    }

    fn number(&self, entry: Entry<'_, '_>, key: &str) -> Result<f64, MapError> {
        let value = match entry.get_ref() {
            // Scales are small; i64 -> f64 is exact for them.
            #[allow(clippy::cast_precision_loss)]
            DeValue::Integer(int) => i64::from_str_radix(int.as_str(), int.radix()).ok().map(|v| v as f64),
            DeValue::Float(float) => float.as_str().replace('_', "").parse::<f64>().ok(),
            other => return Err(self.at(entry, key, format!("expected a number, found {}", other.type_str()))),
        };
        value.filter(|v| v.is_finite()).ok_or_else(|| self.at(entry, key, "must be a finite number"))
    }

    fn choice<T: Copy>(
        &self,
        entry: Entry<'_, '_>,
        key: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Result<T, MapError> {
        let name = self.string(entry, key)?;
        options.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.at(entry, key, format!("unknown {what} \"{name}\", expected one of {}", names.join(", ")))
        })
    }

    fn value_type(&self, entry: Entry<'_, '_>, key: &str) -> Result<ValueType, MapError> {
        let options: Vec<(&str, ValueType)> = ValueType::ALL.iter().map(|t| (t.as_str(), *t)).collect();
        self.choice(entry, key, "type", &options)
    }

    fn load(&self) -> Result<RegisterMap, MapError> {
        let document = DeTable::parse(self.text).map_err(|err| {
            self.error(err.span().as_ref(), None, format!("invalid TOML: {}", err.message().trim_end()))
        })?;
        let root = self.entries(document.get_ref(), "", &["meter", "values"])?;
        let whole = document.span();

        let meter_entry = root
            .get("meter")
            .copied()
            .ok_or_else(|| self.error(Some(&whole), Some("meter"), "missing table [meter]"))?;
        let meter = self.entries(
            self.table(meter_entry, "meter")?,
            "meter",
            &["name", "function", "word_order", "sentinels", "max_registers_per_read", "max_gap"],
        )?;
        let required = |key: &str| {
            meter
                .get(key)
                .copied()
                .ok_or_else(|| self.error(Some(&meter_entry.span()), Some(&format!("meter.{key}")), "missing key"))
        };
        let name = self.string(required("name")?, "meter.name")?.to_owned();
        if name.trim().is_empty() {
            return Err(self.at(required("name")?, "meter.name", "must not be empty"));
        }
        let function = self.choice(
            required("function")?,
            "meter.function",
            "function",
            &[("input", RegisterFunction::Input), ("holding", RegisterFunction::Holding)],
        )?;
        let word_order = match meter.get("word_order") {
            Some(entry) => self.choice(
                entry,
                "meter.word_order",
                "word order",
                &[("big", WordOrder::Big), ("little", WordOrder::Little)],
            )?,
            None => WordOrder::Big,
        };
        let sentinels = match meter.get("sentinels") {
            Some(entry) => self.choice(
                entry,
                "meter.sentinels",
                "sentinel convention",
                &[("sunspec", Sentinels::Sunspec), ("max", Sentinels::Max), ("none", Sentinels::None)],
            )?,
            None => Sentinels::Sunspec,
        };
        let max_registers_per_read = match meter.get("max_registers_per_read") {
            Some(entry) => {
                let v = self.integer(entry, "meter.max_registers_per_read", 4, i64::from(MAX_REGISTERS_PER_READ))?;
                u16::try_from(v).unwrap_or(MAX_REGISTERS_PER_READ)
            }
            None => MAX_REGISTERS_PER_READ,
        };
        let max_gap = match meter.get("max_gap") {
            Some(entry) => {
                let v = self.integer(entry, "meter.max_gap", 0, i64::from(MAX_REGISTERS_PER_READ))?;
                u16::try_from(v).unwrap_or(0)
            }
            None => 0,
        };

        let values_entry = root
            .get("values")
            .copied()
            .ok_or_else(|| self.error(Some(&whole), Some("values"), "missing [[values]]: the map reads nothing"))?;
        let DeValue::Array(items) = values_entry.get_ref() else {
            return Err(self.at(values_entry, "values", "expected an array of tables [[values]]"));
        };
        if items.is_empty() {
            return Err(self.at(values_entry, "values", "empty: the map reads nothing"));
        }
        let mut values: Vec<(ValueSpec, Entry<'_, '_>)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("values[{index}]");
            let spec = self.value(item, &path)?;
            if let Some(first) = values.iter().position(|(v, _)| v.quantity == spec.quantity) {
                return Err(self.at(
                    item,
                    &format!("{path}.quantity"),
                    format!("\"{}\" is already mapped by values[{first}]", spec.quantity),
                ));
            }
            values.push((spec, item));
        }
        self.check_overlaps(&values)?;
        Ok(RegisterMap {
            name,
            function,
            word_order,
            sentinels,
            max_registers_per_read,
            max_gap,
            values: values.into_iter().map(|(v, _)| v).collect(),
        })
    }

    fn value(&self, item: Entry<'_, '_>, path: &str) -> Result<ValueSpec, MapError> {
        let table = self.table(item, path)?;
        let fields = self.entries(table, path, &["quantity", "address", "type", "scale", "scale_register"])?;
        let required = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| self.error(Some(&item.span()), Some(&format!("{path}.{key}")), "missing key"))
        };
        let quantity_key = format!("{path}.quantity");
        let quantity_entry = required("quantity")?;
        let quantity_name = self.string(quantity_entry, &quantity_key)?;
        let quantity = Quantity::from_name(quantity_name).ok_or_else(|| {
            let names: Vec<&str> = Quantity::ALL.iter().map(|q| q.as_str()).collect();
            self.at(
                quantity_entry,
                &quantity_key,
                format!("unknown quantity \"{quantity_name}\", expected one of {}", names.join(", ")),
            )
        })?;
        let address_key = format!("{path}.address");
        let address_entry = required("address")?;
        let address = self.address(address_entry, &address_key)?;
        let value_type = self.value_type(required("type")?, &format!("{path}.type"))?;
        if u32::from(address) + u32::from(value_type.width()) > 0x1_0000 {
            return Err(self.at(address_entry, &address_key, format!("a {value_type} at {address} runs past 65535")));
        }
        let scale = match fields.get("scale") {
            Some(entry) => {
                let scale = self.number(entry, &format!("{path}.scale"))?;
                if scale == 0.0 {
                    return Err(self.at(entry, &format!("{path}.scale"), "must not be 0"));
                }
                scale
            }
            None => 1.0,
        };
        let scale_register = match fields.get("scale_register") {
            Some(entry) => {
                let key = format!("{path}.scale_register");
                let sf = self.entries(self.table(entry, &key)?, &key, &["address", "type"])?;
                let sf_address = sf
                    .get("address")
                    .copied()
                    .ok_or_else(|| self.at(entry, &format!("{key}.address"), "missing key"))?;
                let address = self.address(sf_address, &format!("{key}.address"))?;
                if let Some(ty) = sf.get("type") {
                    let ty_key = format!("{key}.type");
                    let ty_value = self.value_type(ty, &ty_key)?;
                    if ty_value != ValueType::I16 {
                        return Err(self.at(ty, &ty_key, "a SunSpec scale factor (sunssf) is always \"i16\""));
                    }
                }
                Some(ScaleRegister { address })
            }
            None => None,
        };
        Ok(ValueSpec { quantity, address, value_type, scale, scale_register })
    }

    /// Two values must not share a register, nor may a value sit on a scale factor register.
    fn check_overlaps(&self, values: &[(ValueSpec, Entry<'_, '_>)]) -> Result<(), MapError> {
        let span = |v: &ValueSpec| (u32::from(v.address), u32::from(v.address) + u32::from(v.value_type.width()));
        for (index, (value, item)) in values.iter().enumerate() {
            let (start, end) = span(value);
            for (other_index, (other, _)) in values.iter().enumerate().take(index) {
                let (other_start, other_end) = span(other);
                if start < other_end && other_start < end {
                    return Err(self.at(
                        item,
                        &format!("values[{index}].address"),
                        format!("registers {start}..{end} overlap values[{other_index}] ({})", other.quantity),
                    ));
                }
            }
            for (other_index, (other, _)) in values.iter().enumerate() {
                let (other_start, other_end) = span(other);
                if let Some(sf) = value.scale_register.map(|s| u32::from(s.address))
                    && sf >= other_start
                    && sf < other_end
                {
                    return Err(self.at(
                        item,
                        &format!("values[{index}].scale_register.address"),
                        format!("register {sf} holds values[{other_index}] ({})", other.quantity),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RegisterMap {
    /// Parses and validates a register map. `origin` names the source in errors (usually
    /// the file path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, MapError> {
        Loader { origin, text }.load()
    }

    /// Reads, parses and validates a register map file.
    pub fn load(path: &Path) -> Result<Self, MapError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| MapError {
            file: origin.clone(),
            line: None,
            key: None,
            reason: format!("cannot read: {err}"),
        })?;
        Self::from_toml(&text, &origin)
    }
}

/// Loads every `*.toml` file of a directory, sorted by file name. Returns every error, not
/// just the first, so an installer sees all broken files at once.
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, RegisterMap)>, Vec<MapError>> {
    let origin = dir.display().to_string();
    let read_error = |err: std::io::Error| {
        vec![MapError { file: origin.clone(), line: None, key: None, reason: format!("cannot list: {err}") }]
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut maps = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match RegisterMap::load(&path) {
            Ok(map) => maps.push((path, map)),
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() { Ok(maps) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        match RegisterMap::from_toml(text, "configs/meters/sdm630.toml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(err) => err.to_string(),
        }
    }

    const HEADER: &str = "[meter]\nname = \"Eastron SDM630\"\nfunction = \"input\"\n";

    fn values(n: usize) -> String {
        (0..n)
            .map(|i| format!("[[values]]\nquantity = \"{}\"\naddress = {}\ntype = \"f32\"\n", Quantity::ALL[i], i * 2))
            .collect()
    }

    #[test]
    fn unknown_type_names_file_line_key_and_choices() {
        let text =
            format!("{HEADER}{}[[values]]\nquantity = \"frequency\"\naddress = 0x46\ntype = \"f33\"\n", values(3));
        assert_eq!(
            error(&text),
            "configs/meters/sdm630.toml:19: values[3].type: unknown type \"f33\", expected one of \
             f32, f64, i16, u16, i32, u32, i64, u64, acc32, acc64"
        );
    }

    #[test]
    fn unknown_quantity_and_unknown_keys() {
        let text = format!("{HEADER}[[values]]\nquantity = \"power\"\naddress = 0\ntype = \"f32\"\n");
        assert!(
            error(&text).starts_with("configs/meters/sdm630.toml:5: values[0].quantity: unknown quantity \"power\"")
        );
        let text = format!("{HEADER}wordorder = \"big\"\n{}", values(1));
        assert!(
            error(&text).starts_with("configs/meters/sdm630.toml:4: meter.wordorder: unknown key, expected one of")
        );
        let text = format!("{HEADER}[[values]]\nquantity = \"frequency\"\naddress = 0\ntype = \"f32\"\nscal = 2.0\n");
        assert!(error(&text).contains(":8: values[0].scal: unknown key"), "{}", error(&text));
    }

    #[test]
    fn bad_meter_section() {
        assert!(error(&values(1)).ends_with("meter: missing table [meter]"));
        let text = format!("[meter]\nname = \"x\"\nfunction = \"coils\"\n{}", values(1));
        assert_eq!(
            error(&text),
            "configs/meters/sdm630.toml:3: meter.function: unknown function \"coils\", expected one of input, holding"
        );
        let text = format!("[meter]\nname = \"x\"\n{}", values(1));
        assert!(error(&text).ends_with("meter.function: missing key"));
        let text = format!("{HEADER}max_registers_per_read = 200\n{}", values(1));
        assert!(error(&text).ends_with(":4: meter.max_registers_per_read: must be between 4 and 125"));
        let text = format!("{HEADER}word_order = 1\n{}", values(1));
        assert!(error(&text).ends_with(":4: meter.word_order: expected a string, found integer"));
    }

    #[test]
    fn bad_values() {
        assert!(error(HEADER).ends_with("values: missing [[values]]: the map reads nothing"));
        let text = format!("{HEADER}[[values]]\nquantity = \"frequency\"\naddress = 70000\ntype = \"f32\"\n");
        assert!(error(&text).ends_with(":6: values[0].address: must be between 0 and 65535"));
        let text = format!("{HEADER}[[values]]\nquantity = \"frequency\"\naddress = 65535\ntype = \"f32\"\n");
        assert!(error(&text).ends_with("values[0].address: a f32 at 65535 runs past 65535"));
        let text = format!("{HEADER}[[values]]\nquantity = \"frequency\"\naddress = 1\ntype = \"f32\"\nscale = 0\n");
        assert!(error(&text).ends_with(":8: values[0].scale: must not be 0"));
        let text = format!("{HEADER}[[values]]\nquantity = \"frequency\"\ntype = \"f32\"\n");
        assert!(error(&text).ends_with("values[0].address: missing key"));
    }

    #[test]
    fn duplicates_and_overlaps() {
        let text =
            format!("{HEADER}{}[[values]]\nquantity = \"power_total\"\naddress = 40\ntype = \"f32\"\n", values(2));
        assert!(error(&text).ends_with("values[2].quantity: \"power_total\" is already mapped by values[0]"));
        let text = format!("{HEADER}{}[[values]]\nquantity = \"frequency\"\naddress = 3\ntype = \"f32\"\n", values(2));
        assert!(error(&text).ends_with("values[2].address: registers 3..5 overlap values[1] (power_l1)"));
        let text = format!(
            "{HEADER}{}[[values]]\nquantity = \"frequency\"\naddress = 9\ntype = \"i16\"\nscale_register = {{ address = 1 }}\n",
            values(2)
        );
        assert!(error(&text).ends_with("values[2].scale_register.address: register 1 holds values[0] (power_total)"));
        let text = format!(
            "{HEADER}[[values]]\nquantity = \"frequency\"\naddress = 9\ntype = \"i16\"\nscale_register = {{ address = 1, type = \"u16\" }}\n"
        );
        assert!(
            error(&text).ends_with("values[0].scale_register.type: a SunSpec scale factor (sunssf) is always \"i16\"")
        );
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let text = format!("{HEADER}[[values]\nquantity = 1\n");
        let err = error(&text);
        assert!(err.starts_with("configs/meters/sdm630.toml:4: invalid TOML"), "{err}");
    }

    #[test]
    fn defaults_and_hex_addresses() {
        let map = RegisterMap::from_toml(
            &format!("{HEADER}[[values]]\nquantity = \"frequency\"\naddress = 0x46\ntype = \"f32\"\nscale = 1_000\n"),
            "t",
        );
        let map = map.ok();
        assert_eq!(map.as_ref().map(|m| m.values()[0].address), Some(0x46));
        assert_eq!(map.as_ref().map(|m| m.values()[0].scale), Some(1000.0));
        assert_eq!(map.as_ref().map(RegisterMap::word_order), Some(WordOrder::Big));
        assert_eq!(map.as_ref().map(RegisterMap::sentinels), Some(Sentinels::Sunspec));
        assert_eq!(map.as_ref().map(RegisterMap::max_registers_per_read), Some(125));
        assert_eq!(map.as_ref().map(RegisterMap::max_gap), Some(0));
    }
}
