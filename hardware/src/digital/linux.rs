//! Linux backing for the digital I/O: GPIO lines through the GPIO character device
//! (`/dev/gpiochipN`, via linux-embedded-hal's `CdevPin`) and the kernel watchdog
//! (`/dev/watchdog`). Enabled by the `linux` cargo feature.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use embedded_hal::digital::PinState;
//! use hardware::digital::{Contactor, Polarity, SafetyInput, Watchdog as _};
//! use hardware::digital::linux::{LinuxWatchdog, open_input, open_output};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let coil = open_output("/dev/gpiochip0", 17, "sitepilot-contactor", PinState::Low)?;
//! let aux = open_input("/dev/gpiochip0", 27, "sitepilot-contactor-aux")?;
//! let mut contactor = Contactor::new(coil).with_feedback(aux, Polarity::ActiveHigh, Duration::from_millis(200));
//! let mut estop = SafetyInput::new(open_input("/dev/gpiochip0", 22, "sitepilot-estop")?, Polarity::ActiveLow);
//! let mut watchdog = LinuxWatchdog::open("/dev/watchdog")?;
//! let now = Instant::now();
//! if estop.poll(now)? == hardware::digital::SafetyState::Normal {
//!     contactor.close(now).map_err(|e| e.to_string())?;
//! }
//! watchdog.kick()?;
//! # Ok(())
//! # }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

use embedded_hal::digital::{ErrorType, InputPin as _, OutputPin, PinState, StatefulOutputPin};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
pub use linux_embedded_hal::{CdevPin, CdevPinError};

/// Opening a GPIO line failed.
#[derive(Debug, thiserror::Error)]
#[error("{chip} line {line}: {source}")]
pub struct GpioOpenError {
    /// The chip device path.
    pub chip: String,
    /// The line offset on the chip.
    pub line: u32,
    /// What the kernel said.
    #[source]
    pub source: linux_embedded_hal::gpio_cdev::Error,
}

fn request(
    chip: &Path,
    line: u32,
    consumer: &str,
    flags: LineRequestFlags,
    value: u8,
) -> Result<CdevPin, GpioOpenError> {
    let error = |source| GpioOpenError { chip: chip.display().to_string(), line, source };
    let handle = Chip::new(chip).and_then(|mut c| c.get_line(line)).and_then(|l| l.request(flags, value, consumer));
    CdevPin::new(handle.map_err(error)?).map_err(error)
}

/// Requests `line` of `chip` as an input (for [`SafetyInput`](super::SafetyInput) or a
/// contactor's feedback contact). `consumer` shows up in `gpioinfo`.
pub fn open_input(chip: impl AsRef<Path>, line: u32, consumer: &str) -> Result<CdevPin, GpioOpenError> {
    request(chip.as_ref(), line, consumer, LineRequestFlags::INPUT, 0)
}

/// Requests `line` of `chip` as an output driven to `initial` from the first moment (open
/// contactors start de-energised: pass the inactive level).
pub fn open_output(
    chip: impl AsRef<Path>,
    line: u32,
    consumer: &str,
    initial: PinState,
) -> Result<GpioOutput, GpioOpenError> {
    let value = u8::from(initial == PinState::High);
    request(chip.as_ref(), line, consumer, LineRequestFlags::OUTPUT, value).map(GpioOutput)
}

/// A GPIO output line that also reports the level it drives ([`StatefulOutputPin`]) by
/// reading the line back from the kernel, as [`Contactor`](super::Contactor) needs.
pub struct GpioOutput(CdevPin);

impl std::fmt::Debug for GpioOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioOutput").field("line", &self.0.0.line().offset()).finish_non_exhaustive()
    }
}

impl GpioOutput {
    /// The underlying linux-embedded-hal pin.
    pub fn into_inner(self) -> CdevPin {
        self.0
    }
}

impl ErrorType for GpioOutput {
    type Error = CdevPinError;
}

impl OutputPin for GpioOutput {
    fn set_low(&mut self) -> Result<(), CdevPinError> {
        self.0.set_low()
    }

    fn set_high(&mut self) -> Result<(), CdevPinError> {
        self.0.set_high()
    }
}

impl StatefulOutputPin for GpioOutput {
    fn is_set_high(&mut self) -> Result<bool, CdevPinError> {
        self.0.is_high()
    }

    fn is_set_low(&mut self) -> Result<bool, CdevPinError> {
        self.0.is_low()
    }
}

/// The kernel watchdog device (`/dev/watchdog`, see the kernel's watchdog API document).
///
/// Opening it arms the watchdog; every [`kick`](super::Watchdog::kick) writes to it.
/// Dropping it without [`disarm`](Self::disarm) leaves it armed, so a crashed agent reboots
/// the gateway; `disarm` writes the magic character 'V' first so that a clean shutdown
/// stops it (unless the kernel was built with `CONFIG_WATCHDOG_NOWAYOUT`).
#[derive(Debug)]
pub struct LinuxWatchdog {
    device: File,
}

impl LinuxWatchdog {
    /// Opens (and so arms) the watchdog device.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self { device: OpenOptions::new().write(true).open(path)? })
    }

    /// Stops the watchdog with the magic close and closes the device.
    pub fn disarm(mut self) -> io::Result<()> {
        self.device.write_all(b"V")?;
        self.device.flush()
    }
}

impl super::Watchdog for LinuxWatchdog {
    type Error = io::Error;

    fn kick(&mut self) -> io::Result<()> {
        // Any write restarts the timer; '\0' is not the magic close character.
        self.device.write_all(b"\0")?;
        self.device.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digital::Watchdog;

    #[test]
    fn missing_gpio_chip_is_an_error_naming_chip_and_line() {
        let err = open_input("/dev/gpiochip-does-not-exist", 5, "test").err();
        assert!(err.is_some_and(|e| e.to_string().starts_with("/dev/gpiochip-does-not-exist line 5: ")));
    }

    #[test]
    fn watchdog_kicks_and_disarms_by_writing_to_the_device() {
        let dir = std::env::temp_dir().join(format!("sitepilot-watchdog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("watchdog");
        let _ = std::fs::write(&path, b"");
        let opened = LinuxWatchdog::open(&path);
        assert!(opened.is_ok(), "{opened:?}");
        let Ok(mut dog) = opened else { return };
        assert!(dog.kick().is_ok());
        assert!(dog.kick().is_ok());
        assert!(dog.disarm().is_ok());
        assert_eq!(std::fs::read(&path).ok(), Some(b"\0\0V".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
