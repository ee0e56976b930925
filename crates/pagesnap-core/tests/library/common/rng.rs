//! The deterministic generator of the test data, shared by the library's tests
//! (`common`) and the CLI's (`tests/integration/`, which includes this file with
//! `#[path]`): plain std, so neither test tree needs a crate of its own for it.
#![allow(dead_code)] // each test binary uses a different subset

/// Small deterministic generator (splitmix64) so data is reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `len` bytes: random, or (every other 1 KiB stretch when `mixed`) repetitive,
    /// so chunks range from incompressible to highly compressible.
    pub fn bytes(&mut self, len: usize, mixed: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let v = self.next_u64().to_le_bytes();
            let k = (len - out.len()).min(8);
            out.extend_from_slice(&v[..k]);
        }
        if mixed {
            for (i, b) in out.iter_mut().enumerate() {
                if (i / 1024) % 2 == 1 {
                    *b = (i % 7) as u8;
                }
            }
        }
        out
    }

    /// `len` characters of letters, digits and spaces.
    pub fn text(&mut self, len: usize) -> String {
        const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len)
            .map(|_| ALPHA[self.below(ALPHA.len() as u64) as usize] as char)
            .collect()
    }

    /// `n` words from a list of twelve, joined by spaces (text that compresses).
    pub fn words(&mut self, n: usize) -> String {
        const W: [&str; 12] = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima",
        ];
        (0..n)
            .map(|_| W[self.below(W.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}
