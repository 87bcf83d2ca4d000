//! The settings: one check a setting, with its value and where it came from. A missing or bad
//! one fails with the message a run would stop with, which says how to set it.

use super::{Check, Group};
use crate::config::{Layers, RunSettings};

/// The settings a run cannot do without; the others have defaults.
const REQUIRED: [&str; 3] = ["client_id", "private_key", "alipay_public_key"];

/// The settings' group, and the typed settings when they are all valid (the probe needs them).
pub fn checks(layers: &Layers) -> (Group, Option<RunSettings>) {
    let mut group = match layers.config_file() {
        Some(path) => Group::new("settings", format!("settings (file {})", path.display())),
        None => Group::new("settings", "settings (no settings file)"),
    };
    let checked = RunSettings::from_layers(layers);
    let error = checked.as_ref().err().map(|e| format!("{e:#}"));
    let mut shown = false;
    let described = layers.describe();
    for name in REQUIRED {
        if let (false, Err(missing)) = (described.contains_key(name), layers.require(name)) {
            let missing = missing.to_string();
            shown |= error.as_deref() == Some(missing.as_str());
            group.push(Check::fail(name, missing));
        }
    }
    for (name, value) in &described {
        match &error {
            // The error names the setting (`name`) and where its value came from.
            Some(e) if e.contains(&format!("`{name}`")) => {
                shown = true;
                group.push(Check::fail(name, e));
            }
            _ => group.push(Check::ok(name, value.to_string())),
        }
    }
    if let (Some(e), false) = (&error, shown) {
        group.push(Check::fail("settings", e));
    }
    (group, checked.ok())
}
