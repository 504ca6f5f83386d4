//! docs/configuration.md documents every key the config parser accepts.
//!
//! The key lists come from the parser itself: the config structs deny unknown fields, and
//! serde's error for an unknown field lists every field the struct accepts. So a probe key in
//! each section yields that section's keys, and a key added to the code without a row in the
//! doc fails this test.

use raftvip::config::Config;

/// The sections to probe: (how the doc prefixes its keys, the TOML that opens the section).
/// A new section gets a line here.
const SECTIONS: &[(&str, &str)] = &[
    ("", ""),
    ("peer.", "[[peer]]\n"),
    ("vip.", "[[vip]]\n"),
    ("haproxy.", "[haproxy]\n"),
    ("timing.", "[timing]\n"),
    ("announce.", "[announce]\n"),
    ("notify.", "[notify]\n"),
    ("vip_lease.", "[vip_lease]\n"),
    ("limits.", "[limits]\n"),
    ("process.", "[process]\n"),
];

/// The keys the parser accepts in a section, from its unknown-field error.
fn accepted_keys(section: &str) -> Vec<String> {
    let probe = format!("{section}zz_unknown_probe = 1\n");
    let err = Config::parse(&probe).expect_err("a probe key must be rejected");
    let listed = err
        .split_once("expected ")
        .unwrap_or_else(|| panic!("no key list in the error for {section:?}: {err}"))
        .1;
    let keys: Vec<String> = listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!keys.is_empty(), "no keys parsed from: {err}");
    keys
}

#[test]
fn every_config_key_is_in_the_reference() {
    let doc = include_str!("../docs/configuration.md");
    let mut missing = Vec::new();
    let mut total = 0;
    for (prefix, section) in SECTIONS {
        for key in accepted_keys(section) {
            total += 1;
            let row = format!("| `{prefix}{key}` |");
            if !doc.lines().any(|l| l.starts_with(&row)) {
                missing.push(format!("{prefix}{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md has no row for: {} (add `| `KEY` | default | range | meaning |`)",
        missing.join(", ")
    );
    assert!(
        total >= 25,
        "only {total} keys found: is the probe still working?"
    );
}

#[test]
fn every_documented_key_exists() {
    let doc = include_str!("../docs/configuration.md");
    let mut known = Vec::new();
    for (prefix, section) in SECTIONS {
        known.extend(
            accepted_keys(section)
                .into_iter()
                .map(|k| format!("{prefix}{k}")),
        );
    }
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = line[3..].split('`').next().unwrap_or_default();
        assert!(
            known.iter().any(|k| k == key),
            "docs/configuration.md documents `{key}`, which the parser does not accept"
        );
    }
}
