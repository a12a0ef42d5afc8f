//! The TOML configuration loader (`Config::parse`, what `Config::load` runs on a file's
//! text): any text, including the example files mutated (the seed corpus holds them).
//!
//! Checked: nothing panics; a configuration that loads is valid, and what
//! `precursor config show` prints for it (`to_toml`) loads again to the same value.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use precursor_config::Config;

/// Longer texts add nothing the fuzzer could not reach with shorter ones.
const CONFIG_TEXT_BYTES_MAX: usize = 16 * 1024;

fuzz_target!(|bytes: &[u8]| -> Corpus {
    if bytes.len() > CONFIG_TEXT_BYTES_MAX {
        return Corpus::Reject;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Corpus::Reject;
    };
    let Ok(config) = Config::parse(text) else {
        return Corpus::Keep;
    };
    config.validate().expect("a loaded configuration is valid");
    let shown = config.to_toml();
    let again = Config::parse(&shown).unwrap_or_else(|error| {
        panic!("`config show` output does not load again: {error}\n{shown}")
    });
    assert_eq!(again, config, "`config show` output loads to another value");
    Corpus::Keep
});
