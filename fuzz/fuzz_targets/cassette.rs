//! Fuzzes the record/replay cassette parser: arbitrary bytes must never panic, and whatever
//! parses must print and re-parse to the same cassette.
#![no_main]

use libfuzzer_sys::fuzz_target;
use processkit::Cassette;

fuzz_target!(|data: &[u8]| {
    if let Ok(cassette) = Cassette::from_json(data) {
        let printed = cassette.to_json();
        let again = Cassette::from_json(printed.as_bytes()).expect("a printed cassette parses");
        assert_eq!(again, cassette);
        assert_eq!(again.to_json(), printed);
    }
});
