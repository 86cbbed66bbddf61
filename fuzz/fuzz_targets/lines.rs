//! Fuzzes the line splitter/decoder: arbitrary bytes, arbitrary chunking. However the input is
//! chunked, the lines must equal those of the whole buffer, decoding never panics, and the line
//! count matches the newline count.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (data, cuts) = input;
    let cuts: Vec<usize> = cuts.into_iter().map(usize::from).collect();
    let (chunked, whole) = processkit::__fuzz::split_lines(&data, &cuts);
    assert_eq!(chunked, whole);
    let newlines = data.iter().filter(|b| **b == b'\n').count();
    let expected = newlines + usize::from(!data.is_empty() && data.last() != Some(&b'\n'));
    assert_eq!(whole.len(), expected);
});
