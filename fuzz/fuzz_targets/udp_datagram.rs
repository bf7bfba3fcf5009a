//! A UDP datagram as the Socket's receive loop classifies it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wharf_socket::fuzzing::udp(data);
});
