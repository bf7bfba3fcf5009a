//! MQTT 3.1.1 and 5 as a Socket reads them: the CONNECT under the
//! pre-authentication limit, then any packets, arriving in reads of any size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, the second a small packet limit
    // (to reach the size guard) or the default one.
    let Some((&[chunk, limit], bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_packet = if limit & 1 == 0 {
        256 * 1024 + 1024
    } else {
        64 + usize::from(limit)
    };
    wharf_socket::fuzzing::mqtt(bytes, usize::from(chunk) + 1, max_packet);
});
