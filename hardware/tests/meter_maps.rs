//! Every register map in `configs/meters/` loads, is built in, and decodes a realistic
//! register image back to the values it was built from, through the grouped read plan.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{assert_close, meters_dir, realistic_reading};
use hardware::bus::{Expect, RegisterFunction, ScriptedBus};
use hardware::meter::{BUILTIN_MAPS, MAX_REGISTERS_PER_READ, ModbusMeter, Quantity, RegisterMap, load_dir};

fn all_maps() -> Vec<(String, RegisterMap)> {
    match load_dir(&meters_dir()) {
        Ok(maps) => maps
            .into_iter()
            .map(|(path, map)| (path.file_stem().unwrap().to_string_lossy().into_owned(), map))
            .collect(),
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("register maps that do not load:\n{}", lines.join("\n"))
        }
    }
}

#[test]
fn every_file_loads_and_is_built_in() {
    let maps = all_maps();
    assert!(maps.len() >= 12, "expected the shipped maps, found {}", maps.len());
    let files: BTreeSet<&str> = maps.iter().map(|(name, _)| name.as_str()).collect();
    let builtin: BTreeSet<&str> = BUILTIN_MAPS.iter().map(|(name, _)| *name).collect();
    assert_eq!(files, builtin, "configs/meters/ and BUILTIN_MAPS must list the same maps");
    for (name, map) in &maps {
        assert_eq!(RegisterMap::builtin(name).as_ref(), Ok(map), "{name}");
    }
    let unknown = RegisterMap::builtin("sdm1234").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(unknown.contains("unknown meter map \"sdm1234\", expected one of abb-b23, "), "{unknown}");
}

#[test]
fn required_devices_are_covered() {
    let names: Vec<String> = all_maps().into_iter().map(|(_, map)| map.name().to_owned()).collect();
    for device in ["Eastron SDM630", "Eastron SDM72D-M", "Carlo Gavazzi EM24", "Janitza UMG 96-RM", "ABB B23"] {
        assert!(names.iter().any(|n| n == device), "no map for {device}");
    }
    for model in ["201", "202", "203", "204", "101", "102", "103"] {
        assert!(names.iter().any(|n| n.contains(&format!("model {model}"))), "no map for SunSpec model {model}");
    }
}

#[test]
fn read_plans_respect_device_limits_and_cover_every_value() {
    for (name, map) in all_maps() {
        let plan = map.read_plan();
        assert!(!plan.is_empty(), "{name}");
        for read in &plan {
            assert!(read.count >= 1 && read.count <= map.max_registers_per_read(), "{name}: {read:?}");
            assert!(read.count <= MAX_REGISTERS_PER_READ, "{name}: {read:?}");
            assert_eq!(read.function, map.function(), "{name}");
        }
        let inside = |address: u16, width: u16| {
            plan.iter().any(|r| {
                u32::from(address) >= u32::from(r.address)
                    && u32::from(address) + u32::from(width) <= u32::from(r.address) + u32::from(r.count)
            })
        };
        for value in map.values() {
            assert!(inside(value.address, value.value_type.width()), "{name}: {} not in one read", value.quantity);
            if let Some(sf) = value.scale_register {
                assert!(inside(sf.address, 1), "{name}: scale factor of {} not read", value.quantity);
            }
        }
    }
}

/// (function code, address, count) of each read.
type Plan = Vec<(u8, u16, u16)>;

#[test]
fn read_plans_are_as_few_reads_as_the_devices_allow() {
    let plans: Vec<(String, Plan)> = all_maps()
        .into_iter()
        .map(|(name, map)| {
            let reads = map.read_plan().iter().map(|r| (r.function.code(), r.address, r.count)).collect();
            (name, reads)
        })
        .collect();
    let plan = |name: &str| plans.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()).unwrap();
    // One 76-register read for the whole SDM630 poll.
    assert_eq!(plan("eastron-sdm630"), vec![(0x04, 0x0000, 76)]);
    // The SDM72D-M takes at most 60 registers per request.
    assert_eq!(plan("eastron-sdm72d-m"), vec![(0x04, 0x0000, 54), (0x04, 0x0046, 6)]);
    assert_eq!(plan("janitza-umg96rm"), vec![(0x03, 19000, 78)]);
    assert_eq!(plan("abb-b23"), vec![(0x03, 0x5000, 8), (0x03, 0x5B00, 59)]);
    // EM24: at most 11 registers per request.
    let em24 = plan("carlo-gavazzi-em24");
    assert!(em24.iter().all(|(_, _, count)| *count <= 11), "{em24:?}");
    assert_eq!(em24.len(), 6, "{em24:?}");
    for model in ["201", "202", "203", "204"] {
        assert_eq!(plan(&format!("sunspec-{model}")), vec![(0x03, 40072, 52)], "model {model}");
    }
    for model in ["101", "102", "103"] {
        assert_eq!(plan(&format!("sunspec-{model}")), vec![(0x03, 40072, 24)], "model {model}");
    }
}

#[tokio::test]
async fn every_map_decodes_a_realistic_register_image() {
    for (name, map) in all_maps() {
        let expected = realistic_reading(&map);
        let image = map.encode(&expected).unwrap_or_else(|e| panic!("{name}: cannot encode: {e}"));
        // Serve exactly the planned reads, as the device would (reserved registers as 0).
        let script = map.read_plan().into_iter().map(|read| {
            let words = image.read(read.address, read.count);
            match read.function {
                RegisterFunction::Holding => Expect::read_holding(1, read.address, read.count, Ok(words)),
                RegisterFunction::Input => Expect::read_input(1, read.address, read.count, Ok(words)),
            }
        });
        let mut meter = ModbusMeter::new(ScriptedBus::new(script.collect::<Vec<_>>()), 1, map.clone());
        let reading = meter.read_all().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        meter.bus_mut().done();
        for quantity in Quantity::ALL {
            let spec = map.values().iter().find(|v| v.quantity == quantity);
            let Some(spec) = spec else {
                assert_eq!(reading.get(quantity), None, "{name}: {quantity} is not mapped");
                continue;
            };
            let want = expected.get(quantity);
            // Resolution of the register: half a step of the fixed scale, or 0.1 % for values
            // whose SunSpec scale factor the encoder chose.
            let tolerance = want.map_or(0.0, |w| (w.abs() * 1e-3).max(spec.scale.abs() / 2.0) + 1e-9);
            assert_close(&name, quantity, reading.get(quantity), want, tolerance);
        }
    }
}

#[tokio::test]
async fn unimplemented_points_decode_as_none() {
    // A single-phase SunSpec meter: phase B and C registers hold 0x8000 in a model 203 map.
    let map = RegisterMap::builtin("sunspec-203").unwrap();
    let mut reading = realistic_reading(&map);
    reading.currents_a[1] = None;
    reading.currents_a[2] = None;
    reading.powers_w = [Some(3_511.0), None, None];
    let image = map.encode(&reading).unwrap();
    assert_eq!(image.get(40073), Some(0x8000));
    let decoded = map.decode(&image).unwrap();
    assert_eq!(decoded.currents_a[1..], [None, None]);
    assert_eq!(decoded.powers_w, [Some(3_511.0), None, None]);
    assert!(decoded.currents_a[0].is_some());
}

#[test]
fn sunspec_maps_move_to_another_base_address() {
    let map = RegisterMap::builtin("sunspec-203").unwrap().with_address_offset(-40_000).unwrap();
    assert_eq!(map.read_plan().first().map(|r| (r.address, r.count)), Some((72, 52)));
}
