//! The config file: any text either loads or gives an error naming file/line/key;
//! never a panic. A config that loads prints (as `x402d config check` does) to TOML
//! that loads again to the same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match x402d::config::parse(text, Some("fuzz.toml".into())) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(l) => {
            let printed = toml::to_string_pretty(&l.config).expect("a loaded config prints");
            let again = x402d::config::parse(&printed, None)
                .unwrap_or_else(|e| panic!("printed config does not load: {e}\n{printed}"));
            assert_eq!(
                toml::to_string_pretty(&again.config).unwrap(),
                printed,
                "print → load → print is stable"
            );
            assert_eq!(again.networks, l.networks);
            assert_eq!(again.apps, l.apps);
        }
    }
});
