//! The register maps shipped in `configs/meters/`, compiled into the binary so that an
//! installer needs only the binary and one configuration file.

use super::load::MapError;
use super::map::RegisterMap;

macro_rules! maps {
    ($($name:literal),* $(,)?) => {
        /// Name and TOML text of every shipped map (the file name without `.toml`).
        pub const BUILTIN_MAPS: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../configs/meters/", $name, ".toml")))),*
        ];
    };
}

maps![
    "abb-b23",
    "carlo-gavazzi-em24",
    "eastron-sdm630",
    "eastron-sdm72d-m",
    "janitza-umg96rm",
    "sunspec-101",
    "sunspec-102",
    "sunspec-103",
    "sunspec-201",
    "sunspec-202",
    "sunspec-203",
    "sunspec-204",
];

impl RegisterMap {
    /// A shipped map by name, e.g. `"eastron-sdm630"` or `"sunspec-203"`.
    pub fn builtin(name: &str) -> Result<RegisterMap, MapError> {
        match BUILTIN_MAPS.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => RegisterMap::from_toml(text, &format!("configs/meters/{n}.toml")),
            None => {
                let names: Vec<&str> = BUILTIN_MAPS.iter().map(|(n, _)| *n).collect();
                Err(MapError {
                    file: "built-in meter maps".into(),
                    line: None,
                    key: None,
                    reason: format!("unknown meter map \"{name}\", expected one of {}", names.join(", ")),
                })
            }
        }
    }
}
