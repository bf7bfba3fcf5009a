//! Raw TCP framing (length-prefixed and lines): the token frame under the
//! pre-authentication limit, then frames, arriving in reads of any size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, chunk], bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = if mode & 2 == 0 {
        256 * 1024
    } else {
        16 + usize::from(chunk)
    };
    wharf_socket::fuzzing::tcp(bytes, mode & 1 == 1, usize::from(chunk) + 1, max);
});
