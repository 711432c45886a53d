//! BLAKE3 of many short inputs at once, each hash exactly what `blake3::hash` gives.
//!
//! A content key hashes an entry's canonical encoding, a few hundred bytes: one BLAKE3 chunk,
//! whose blocks depend on each other, so `blake3::hash` compresses them one after another and no
//! SIMD width helps within one input (about 1.2 ns a byte on the benchmark machine, a sixth of
//! a Domino audit event's cost). Different inputs do not depend on each other: they are
//! compressed side by side, one per 32-bit lane, sixteen with AVX-512 and eight with AVX2, as
//! BLAKE3's own `hash_many` does for the chunks of one long input. Each lane carries its own
//! input, position and flags, and takes the next input as soon as its own is done, so inputs of
//! different lengths keep every lane busy.
//!
//! Inputs longer than a chunk (1024 bytes) have a tree of chunks; they are left to
//! `blake3::hash`, as is everything on a processor without AVX2. The tests hold every width
//! the processor has to `blake3::hash`, for every length up to past a chunk.

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// An input of at most this many bytes is one BLAKE3 chunk, hashed in a lane.
const CHUNK_LEN: usize = 1024;
const BLOCK_LEN: usize = 64;

/// Inputs to hash together. Each is copied into one buffer at a block boundary and padded with
/// zeros to the next, so every block a lane reads is 64 bytes in place.
#[derive(Default)]
pub struct Batch {
    blocks: Vec<u8>,
    /// Each input's start in `blocks`, and its length.
    spans: Vec<(usize, usize)>,
}

impl Batch {
    /// A batch with room for `inputs` inputs of `bytes` bytes in all before it grows.
    pub fn with_capacity(inputs: usize, bytes: usize) -> Batch {
        Batch {
            blocks: Vec::with_capacity(bytes + inputs * BLOCK_LEN),
            spans: Vec::with_capacity(inputs),
        }
    }

    /// Adds an input (copied); its hash comes in its place in [`Batch::finish`]'s output.
    pub fn push(&mut self, input: &[u8]) {
        let at = self.blocks.len();
        self.blocks.extend_from_slice(input);
        // Zeros to the end of the last block; an empty input is one empty block, as BLAKE3
        // hashes it.
        let padded = input.len().div_ceil(BLOCK_LEN).max(1) * BLOCK_LEN;
        self.blocks.resize(at + padded, 0);
        self.spans.push((at, input.len()));
    }

    /// How many inputs are waiting.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Appends the hash of every input pushed since the last call to `out`, in the order they
    /// were pushed, and empties the batch (keeping its buffers).
    pub fn finish(&mut self, out: &mut Vec<Hash>) {
        self.finish_with(Width::detect(), out);
    }

    /// [`Batch::finish`] at a given width: only a width the processor has can be named (see
    /// [`Width`]), so this is safe to call with any.
    fn finish_with(&mut self, width: Width, out: &mut Vec<Hash>) {
        let first = out.len();
        let lanes = width.lanes();
        out.extend(self.spans.iter().map(|&(at, len)| {
            if lanes != Lanes::One && len <= CHUNK_LEN {
                [0; 32] // computed below
            } else {
                *blake3::hash(&self.blocks[at..at + len]).as_bytes()
            }
        }));
        let out = &mut out[first..];
        match lanes {
            Lanes::One => {}
            // SAFETY: a `Width` of eight lanes is only made once the processor was seen to have
            // AVX2 (`Width::avx2`).
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx2 => unsafe { x86::hash_chunks_avx2(&self.blocks, &self.spans, out) },
            // SAFETY: a `Width` of sixteen lanes is only made once the processor was seen to
            // have AVX-512F (`Width::avx512`).
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx512 => unsafe { x86::hash_chunks_avx512(&self.blocks, &self.spans, out) },
        }
        self.blocks.clear();
        self.spans.clear();
    }
}

use width::{Lanes, Width};

/// How many inputs are hashed side by side, in a type that only the processor's features can
/// make: its field is private to this module, and each constructor of a SIMD width checks the
/// feature first, so a `Width` the processor lacks cannot exist, and [`Batch::finish_with`]
/// needs no `unsafe` contract.
mod width {
    /// The widths there are.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(super) enum Lanes {
        /// One at a time, by `blake3::hash`: every processor.
        One,
        /// Eight.
        #[cfg(target_arch = "x86_64")]
        Avx2,
        /// Sixteen.
        #[cfg(target_arch = "x86_64")]
        Avx512,
    }

    /// A width this processor has.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(super) struct Width(Lanes);

    impl Width {
        pub(super) fn lanes(self) -> Lanes {
            self.0
        }

        /// One at a time: every processor has it.
        pub(super) fn portable() -> Width {
            Width(Lanes::One)
        }

        /// Eight lanes, if the processor has AVX2.
        pub(super) fn avx2() -> Option<Width> {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                return Some(Width(Lanes::Avx2));
            }
            None
        }

        /// Sixteen lanes, if the processor has AVX-512F.
        pub(super) fn avx512() -> Option<Width> {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Width(Lanes::Avx512));
            }
            None
        }

        /// The widest this processor has (the standard library caches what it detects).
        pub(super) fn detect() -> Width {
            Width::avx512()
                .or_else(Width::avx2)
                .unwrap_or_else(Width::portable)
        }
    }
}

/// The lanes: one compression loop, written once over a vector of lanes, for two widths.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256i, __m512i, _mm256_add_epi32, _mm256_blendv_epi8, _mm256_loadu_si256,
        _mm256_or_si256, _mm256_permute2x128_si256, _mm256_set1_epi32, _mm256_setr_epi8,
        _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_si256,
        _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32, _mm256_unpacklo_epi64,
        _mm256_xor_si256, _mm512_add_epi32, _mm512_loadu_si512, _mm512_mask_blend_epi32,
        _mm512_ror_epi32, _mm512_set1_epi32, _mm512_shuffle_i32x4, _mm512_storeu_si512,
        _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
        _mm512_xor_si512,
    };

    use super::{Hash, BLOCK_LEN, CHUNK_LEN};

    /// The most lanes a vector has.
    const MAX_LANES: usize = 16;

    const IV: [u32; 8] = [
        0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
        0x5BE0CD19,
    ];

    /// The message word each step of each of the seven rounds takes (the BLAKE3 paper's
    /// permutation applied round after round).
    const SCHEDULE: [[usize; 16]; 7] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8],
        [3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1],
        [10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6],
        [12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4],
        [9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7],
        [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13],
    ];

    const CHUNK_START: u32 = 1;
    const CHUNK_END: u32 = 2;
    const ROOT: u32 = 8;

    /// A vector of 32-bit words, one per lane, and what the compression does with it.
    ///
    /// # Safety
    /// Every method needs the vector's instruction set: they are only called from the entry
    /// points below, which enable it, and into which they are inlined.
    trait Vector: Copy {
        const LANES: usize;
        unsafe fn splat(w: u32) -> Self;
        /// The first `LANES` words of `w`.
        unsafe fn load(w: &[u32; MAX_LANES]) -> Self;
        /// Into the first `LANES` words of `w`.
        unsafe fn store(self, w: &mut [u32; MAX_LANES]);
        unsafe fn add(self, b: Self) -> Self;
        unsafe fn xor(self, b: Self) -> Self;
        unsafe fn rot16(self) -> Self;
        unsafe fn rot12(self) -> Self;
        unsafe fn rot8(self) -> Self;
        unsafe fn rot7(self) -> Self;
        /// `with` in the lanes where `mask` is all ones, `self` elsewhere.
        unsafe fn select(self, with: Self, mask: &[u32; MAX_LANES]) -> Self;
        /// The sixteen words of the block each of the first `LANES` rows points at, word `i` of
        /// every lane in vector `i`. Each row must point at 64 readable bytes.
        unsafe fn message(rows: &[*const u8; MAX_LANES]) -> [Self; 16];
    }

    impl Vector for __m256i {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(w: u32) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe { _mm256_set1_epi32(w as i32) }
        }
        #[inline(always)]
        unsafe fn load(w: &[u32; MAX_LANES]) -> Self {
            // SAFETY: `w` is 32 readable bytes, as many as are read, and the load is an unaligned
            // one; the caller has AVX2.
            unsafe { _mm256_loadu_si256(w.as_ptr().cast()) }
        }
        #[inline(always)]
        unsafe fn store(self, w: &mut [u32; MAX_LANES]) {
            // SAFETY: `w` is 32 writable bytes, as many as are written, and the store is an
            // unaligned one; the caller has AVX2.
            unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), self) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe { _mm256_add_epi32(self, b) }
        }
        #[inline(always)]
        unsafe fn xor(self, b: Self) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe { _mm256_xor_si256(self, b) }
        }
        #[inline(always)]
        unsafe fn rot16(self) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe {
                let rotate = _mm256_setr_epi8(
                    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5,
                    10, 11, 8, 9, 14, 15, 12, 13,
                );
                _mm256_shuffle_epi8(self, rotate)
            }
        }
        #[inline(always)]
        unsafe fn rot12(self) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe { _mm256_or_si256(_mm256_srli_epi32::<12>(self), _mm256_slli_epi32::<20>(self)) }
        }
        #[inline(always)]
        unsafe fn rot8(self) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe {
                let rotate = _mm256_setr_epi8(
                    1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4,
                    9, 10, 11, 8, 13, 14, 15, 12,
                );
                _mm256_shuffle_epi8(self, rotate)
            }
        }
        #[inline(always)]
        unsafe fn rot7(self) -> Self {
            // SAFETY: an AVX2 instruction on registers only; the caller has AVX2 (the trait's
            // contract).
            unsafe { _mm256_or_si256(_mm256_srli_epi32::<7>(self), _mm256_slli_epi32::<25>(self)) }
        }
        #[inline(always)]
        unsafe fn select(self, with: Self, mask: &[u32; MAX_LANES]) -> Self {
            // SAFETY: AVX2 instructions on registers, and a load of `mask` (see `load`); the caller
            // has AVX2.
            unsafe { _mm256_blendv_epi8(self, with, Self::load(mask)) }
        }
        #[inline(always)]
        unsafe fn message(rows: &[*const u8; MAX_LANES]) -> [Self; 16] {
            // SAFETY: each row points at 64 readable bytes (this method's contract), which are all
            // the unaligned loads read; the caller has AVX2.
            unsafe {
                let mut m = [Self::splat(0); 16];
                for half in 0..2 {
                    let mut v = [Self::splat(0); 8];
                    for (row, v) in rows.iter().zip(v.iter_mut()) {
                        *v = _mm256_loadu_si256(row.add(32 * half).cast());
                    }
                    // Word j of row i becomes word i of vector j: rows interleaved word by word
                    // (within each 128-bit half), then two words at a time, then the halves.
                    let ab_lo = _mm256_unpacklo_epi32(v[0], v[1]);
                    let ab_hi = _mm256_unpackhi_epi32(v[0], v[1]);
                    let cd_lo = _mm256_unpacklo_epi32(v[2], v[3]);
                    let cd_hi = _mm256_unpackhi_epi32(v[2], v[3]);
                    let ef_lo = _mm256_unpacklo_epi32(v[4], v[5]);
                    let ef_hi = _mm256_unpackhi_epi32(v[4], v[5]);
                    let gh_lo = _mm256_unpacklo_epi32(v[6], v[7]);
                    let gh_hi = _mm256_unpackhi_epi32(v[6], v[7]);
                    let abcd_0 = _mm256_unpacklo_epi64(ab_lo, cd_lo);
                    let abcd_1 = _mm256_unpackhi_epi64(ab_lo, cd_lo);
                    let abcd_2 = _mm256_unpacklo_epi64(ab_hi, cd_hi);
                    let abcd_3 = _mm256_unpackhi_epi64(ab_hi, cd_hi);
                    let efgh_0 = _mm256_unpacklo_epi64(ef_lo, gh_lo);
                    let efgh_1 = _mm256_unpackhi_epi64(ef_lo, gh_lo);
                    let efgh_2 = _mm256_unpacklo_epi64(ef_hi, gh_hi);
                    let efgh_3 = _mm256_unpackhi_epi64(ef_hi, gh_hi);
                    let m = &mut m[8 * half..8 * half + 8];
                    m[0] = _mm256_permute2x128_si256(abcd_0, efgh_0, 0x20);
                    m[1] = _mm256_permute2x128_si256(abcd_1, efgh_1, 0x20);
                    m[2] = _mm256_permute2x128_si256(abcd_2, efgh_2, 0x20);
                    m[3] = _mm256_permute2x128_si256(abcd_3, efgh_3, 0x20);
                    m[4] = _mm256_permute2x128_si256(abcd_0, efgh_0, 0x31);
                    m[5] = _mm256_permute2x128_si256(abcd_1, efgh_1, 0x31);
                    m[6] = _mm256_permute2x128_si256(abcd_2, efgh_2, 0x31);
                    m[7] = _mm256_permute2x128_si256(abcd_3, efgh_3, 0x31);
                }
                m
            }
        }
    }

    impl Vector for __m512i {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(w: u32) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_set1_epi32(w as i32) }
        }
        #[inline(always)]
        unsafe fn load(w: &[u32; MAX_LANES]) -> Self {
            // SAFETY: `w` is 64 readable bytes, as many as are read, and the load is an unaligned
            // one; the caller has AVX-512F.
            unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
        }
        #[inline(always)]
        unsafe fn store(self, w: &mut [u32; MAX_LANES]) {
            // SAFETY: `w` is 64 writable bytes, as many as are written, and the store is an
            // unaligned one; the caller has AVX-512F.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), self) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_add_epi32(self, b) }
        }
        #[inline(always)]
        unsafe fn xor(self, b: Self) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_xor_si512(self, b) }
        }
        #[inline(always)]
        unsafe fn rot16(self) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_ror_epi32::<16>(self) }
        }
        #[inline(always)]
        unsafe fn rot12(self) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_ror_epi32::<12>(self) }
        }
        #[inline(always)]
        unsafe fn rot8(self) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_ror_epi32::<8>(self) }
        }
        #[inline(always)]
        unsafe fn rot7(self) -> Self {
            // SAFETY: an AVX-512F instruction on registers only; the caller has AVX-512F (the
            // trait's contract).
            unsafe { _mm512_ror_epi32::<7>(self) }
        }
        #[inline(always)]
        unsafe fn select(self, with: Self, mask: &[u32; MAX_LANES]) -> Self {
            // SAFETY: AVX-512F instructions on registers, and a load of `mask` (see `load`); the
            // caller has AVX-512F.
            unsafe {
                let bits = mask
                    .iter()
                    .enumerate()
                    .fold(0u16, |b, (l, m)| b | u16::from(*m != 0) << l);
                _mm512_mask_blend_epi32(bits, self, with)
            }
        }
        #[inline(always)]
        unsafe fn message(rows: &[*const u8; MAX_LANES]) -> [Self; 16] {
            // SAFETY: each row points at 64 readable bytes (this method's contract), which are all
            // the unaligned loads read; the caller has AVX-512F.
            unsafe {
                // A 16 × 16 transpose: word j of row i becomes word i of vector j. Rows are
                // interleaved word by word, then two words at a time (within each 128-bit
                // quarter), which leaves quarter k of vector 4r + i holding word 4k + i of rows
                // 4r..4r + 4; the quarters are then transposed as a 4 × 4 matrix.
                let r = rows.map(|row| _mm512_loadu_si512(row.cast()));
                let mut t = [Self::splat(0); 16];
                for p in 0..8 {
                    t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
                    t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
                }
                let mut u = [Self::splat(0); 16];
                for q in 0..4 {
                    let t = &t[4 * q..4 * q + 4];
                    u[4 * q] = _mm512_unpacklo_epi64(t[0], t[2]);
                    u[4 * q + 1] = _mm512_unpackhi_epi64(t[0], t[2]);
                    u[4 * q + 2] = _mm512_unpacklo_epi64(t[1], t[3]);
                    u[4 * q + 3] = _mm512_unpackhi_epi64(t[1], t[3]);
                }
                let mut m = [Self::splat(0); 16];
                for i in 0..4 {
                    let (a, b, c, d) = (u[i], u[4 + i], u[8 + i], u[12 + i]);
                    // Quarters 0 and 1 of a then of b, quarters 2 and 3 likewise.
                    let ab_lo = _mm512_shuffle_i32x4::<0x44>(a, b);
                    let ab_hi = _mm512_shuffle_i32x4::<0xEE>(a, b);
                    let cd_lo = _mm512_shuffle_i32x4::<0x44>(c, d);
                    let cd_hi = _mm512_shuffle_i32x4::<0xEE>(c, d);
                    // Quarters 0 and 2 of each pair, then 1 and 3: one quarter of each row.
                    m[i] = _mm512_shuffle_i32x4::<0x88>(ab_lo, cd_lo);
                    m[4 + i] = _mm512_shuffle_i32x4::<0xDD>(ab_lo, cd_lo);
                    m[8 + i] = _mm512_shuffle_i32x4::<0x88>(ab_hi, cd_hi);
                    m[12 + i] = _mm512_shuffle_i32x4::<0xDD>(ab_hi, cd_hi);
                }
                m
            }
        }
    }

    /// Hashes every input of `spans` (start in `blocks`, length) of at most one chunk into the
    /// same place of `out`, eight at a time; longer ones are left as they are.
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn hash_chunks_avx2(blocks: &[u8], spans: &[(usize, usize)], out: &mut [Hash]) {
        // SAFETY: the processor has AVX2 (this function's contract), which this function
        // enables, so the vector's methods are compiled and run with it.
        unsafe { hash_chunks::<__m256i>(blocks, spans, out) }
    }

    /// [`hash_chunks_avx2`], sixteen at a time.
    ///
    /// # Safety
    /// The processor must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn hash_chunks_avx512(blocks: &[u8], spans: &[(usize, usize)], out: &mut [Hash]) {
        // SAFETY: the processor has AVX-512F (this function's contract), which this function
        // enables, so the vector's methods are compiled and run with it.
        unsafe { hash_chunks::<__m512i>(blocks, spans, out) }
    }

    /// What a lane is hashing: which input, where its next block is in `blocks`, and how
    /// many blocks it has left.
    #[derive(Clone, Copy)]
    struct Lane {
        input: usize,
        at: usize,
        left: usize,
    }

    /// The loop of [`hash_chunks_avx2`] and [`hash_chunks_avx512`], over any vector.
    ///
    /// # Safety
    /// The processor must have `V`'s instruction set, and the caller enable it (so that the
    /// vector's methods, inlined here, are compiled with it).
    #[inline(always)]
    unsafe fn hash_chunks<V: Vector>(blocks: &[u8], spans: &[(usize, usize)], out: &mut [Hash]) {
        assert_eq!(spans.len(), out.len());
        let mut pending = (0..spans.len())
            .filter(|i| spans[*i].1 <= CHUNK_LEN)
            .map(|input| Lane {
                input,
                at: spans[input].0,
                left: spans[input].1.div_ceil(BLOCK_LEN).max(1),
            });
        // An idle lane reads this block; its result is not used.
        let idle = [0u8; BLOCK_LEN];
        let mut rows = [idle.as_ptr(); MAX_LANES];
        let mut lanes: [Option<Lane>; MAX_LANES] = [None; MAX_LANES];
        let mut lens = [0u32; MAX_LANES];
        let mut flags = [0u32; MAX_LANES];
        // The length and flags of the block a lane reads next.
        let block = |lane: &Lane| {
            let (start, len) = spans[lane.input];
            let last = lane.left == 1;
            let n = if last {
                len - (len.div_ceil(BLOCK_LEN).max(1) - 1) * BLOCK_LEN
            } else {
                BLOCK_LEN
            };
            let flags = if lane.at == start { CHUNK_START } else { 0 }
                | if last { CHUNK_END | ROOT } else { 0 };
            (n as u32, flags)
        };
        for (l, lane) in lanes[..V::LANES].iter_mut().enumerate() {
            *lane = pending.next();
            if let Some(lane) = lane {
                (lens[l], flags[l]) = block(lane);
            }
        }
        // SAFETY (every block below): the processor has `V`'s instruction set, which the caller
        // enabled (this function's contract).
        let mut cv = IV.map(|w| unsafe { V::splat(w) });
        loop {
            let mut busy = false;
            for (row, lane) in rows.iter_mut().zip(&lanes).take(V::LANES) {
                if let Some(lane) = lane {
                    // Each block read is 64 bytes inside `blocks` (see `Batch::push`).
                    *row = blocks[lane.at..lane.at + BLOCK_LEN].as_ptr();
                    busy = true;
                } else {
                    *row = idle.as_ptr();
                }
            }
            if !busy {
                return;
            }
            // Each row points at 64 bytes of `blocks` (the slice above) or at `idle`.
            // SAFETY: as above, and each row points at 64 readable bytes, as `message` needs.
            let m = unsafe { V::message(&rows) };
            // SAFETY: as above.
            unsafe { compress(&mut cv, &m, V::load(&lens), V::load(&flags)) };
            let mut restart = [0u32; MAX_LANES];
            let mut words = None;
            for l in 0..V::LANES {
                let Some(lane) = &mut lanes[l] else {
                    continue;
                };
                lane.left -= 1;
                lane.at += BLOCK_LEN;
                if lane.left > 0 {
                    (lens[l], flags[l]) = block(lane);
                    continue;
                }
                // Done: its hash is out, and it takes the next input.
                let words = words.get_or_insert_with(|| {
                    let mut words = [[0u32; MAX_LANES]; 8];
                    for (w, v) in words.iter_mut().zip(&cv) {
                        // SAFETY: as above.
                        unsafe { v.store(w) };
                    }
                    words
                });
                for (w, word) in words.iter().enumerate() {
                    out[lane.input][4 * w..4 * w + 4].copy_from_slice(&word[l].to_le_bytes());
                }
                lanes[l] = pending.next();
                if let Some(lane) = &lanes[l] {
                    (lens[l], flags[l]) = block(lane);
                }
                restart[l] = u32::MAX;
            }
            if words.is_some() {
                for (v, iv) in cv.iter_mut().zip(IV) {
                    // SAFETY: as above.
                    *v = unsafe { v.select(V::splat(iv), &restart) };
                }
            }
        }
    }

    /// BLAKE3's G on four (a, b, c, d) quadruples of state words at once, every lane at once,
    /// with message words `x` then `y` for each quadruple.
    macro_rules! g4 {
        ($v:ident, [$($a:literal $b:literal $c:literal $d:literal),+], [$($x:expr),+], [$($y:expr),+]) => {
            $( $v[$a] = $v[$a].add($v[$b]).add($x); )+
            $( $v[$d] = $v[$d].xor($v[$a]).rot16(); )+
            $( $v[$c] = $v[$c].add($v[$d]); )+
            $( $v[$b] = $v[$b].xor($v[$c]).rot12(); )+
            $( $v[$a] = $v[$a].add($v[$b]).add($y); )+
            $( $v[$d] = $v[$d].xor($v[$a]).rot8(); )+
            $( $v[$c] = $v[$c].add($v[$d]); )+
            $( $v[$b] = $v[$b].xor($v[$c]).rot7(); )+
        };
    }

    /// One round: G on the four columns, then on the four diagonals, with round `R`'s message
    /// words.
    ///
    /// # Safety
    /// As [`hash_chunks`]: the processor has `V`'s instruction set, and the caller enables it.
    #[inline(always)]
    unsafe fn round<V: Vector, const R: usize>(v: &mut [V; 16], m: &[V; 16]) {
        let s = &SCHEDULE[R];
        // SAFETY: vector arithmetic on registers only, with the instruction set the caller
        // has (this function's contract).
        unsafe {
            g4!(v, [0 4 8 12, 1 5 9 13, 2 6 10 14, 3 7 11 15],
                [m[s[0]], m[s[2]], m[s[4]], m[s[6]]], [m[s[1]], m[s[3]], m[s[5]], m[s[7]]]);
            g4!(v, [0 5 10 15, 1 6 11 12, 2 7 8 13, 3 4 9 14],
                [m[s[8]], m[s[10]], m[s[12]], m[s[14]]], [m[s[9]], m[s[11]], m[s[13]], m[s[15]]]);
        }
    }

    /// One compression of a block in every lane: `cv` (the chaining value, word `i` of every
    /// lane in vector `i`) becomes the next. The block counter is 0: every input is the first
    /// chunk.
    ///
    /// # Safety
    /// As [`hash_chunks`]: the processor has `V`'s instruction set, and the caller enables it.
    #[inline(always)]
    unsafe fn compress<V: Vector>(cv: &mut [V; 8], m: &[V; 16], lens: V, flags: V) {
        // SAFETY: vector arithmetic on registers only, with the instruction set the caller
        // has (this function's contract).
        unsafe {
            let zero = V::splat(0);
            let iv = |i: usize| V::splat(IV[i]);
            let mut v = [
                cv[0],
                cv[1],
                cv[2],
                cv[3],
                cv[4],
                cv[5],
                cv[6],
                cv[7],
                iv(0),
                iv(1),
                iv(2),
                iv(3),
                zero,
                zero,
                lens,
                flags,
            ];
            round::<V, 0>(&mut v, m);
            round::<V, 1>(&mut v, m);
            round::<V, 2>(&mut v, m);
            round::<V, 3>(&mut v, m);
            round::<V, 4>(&mut v, m);
            round::<V, 5>(&mut v, m);
            round::<V, 6>(&mut v, m);
            for i in 0..8 {
                cv[i] = v[i].xor(v[i + 8]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Every width this processor has, portable first. A width it lacks cannot be tested on
    /// it: that is said on stderr (`cargo test -- --nocapture` shows it), not passed over in
    /// silence.
    fn widths() -> Vec<Width> {
        let mut all = vec![Width::portable()];
        for (name, width) in [
            ("AVX2 (eight lanes)", Width::avx2()),
            ("AVX-512F (sixteen lanes)", Width::avx512()),
        ] {
            match width {
                Some(w) => all.push(w),
                None => eprintln!("lanes: SKIPPED {name}: this processor does not have it"),
            }
        }
        eprintln!(
            "lanes: testing {:?}",
            all.iter().map(|w| w.lanes()).collect::<Vec<_>>()
        );
        all
    }

    /// Every length up to past a chunk, in batches of sizes that leave lanes idle, full, and
    /// refilled many times, with lengths mixed so that lanes finish at different blocks; at
    /// every width the processor has, and always at the portable one.
    #[test]
    fn every_hash_is_blake3s() {
        let mut inputs: Vec<Vec<u8>> = (0..=1100).map(|len| bytes(len as u64, len)).collect();
        // Shuffled lengths, and a run of equal ones.
        inputs.extend((0..300).map(|i| bytes(i + 5000, (i as usize * 389) % 1030)));
        inputs.extend((0..20).map(|i| bytes(i + 9000, 64)));
        inputs.push(bytes(1, 5000));
        let want: Vec<Hash> = inputs.iter().map(|i| *blake3::hash(i).as_bytes()).collect();
        let widths = widths();
        assert_eq!(
            widths[0].lanes(),
            Lanes::One,
            "the portable width always runs"
        );
        for width in widths {
            for size in [1, 3, 7, 8, 9, 15, 16, 17, 33, 100, inputs.len()] {
                let mut batch = Batch::default();
                let mut got = Vec::new();
                for group in inputs.chunks(size) {
                    for input in group {
                        batch.push(input);
                    }
                    assert_eq!(batch.len(), group.len());
                    batch.finish_with(width, &mut got);
                    assert!(batch.is_empty());
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g,
                        w,
                        "input {i} ({} bytes), batches of {size}, {width:?}",
                        inputs[i].len()
                    );
                }
                assert_eq!(got.len(), want.len());
            }
        }
    }

    /// The dispatch takes the widest width there is.
    #[test]
    fn the_widest_width_is_detected() {
        let widest = *widths().last().expect("the portable width at least");
        assert_eq!(Width::detect(), widest);
    }

    #[test]
    fn the_dispatch_hashes_as_blake3_does() {
        let mut batch = Batch::default();
        let inputs: Vec<Vec<u8>> = (0..40).map(|i| bytes(i, 13 * i as usize)).collect();
        inputs.iter().for_each(|i| batch.push(i));
        let mut got = vec![[7; 32]];
        batch.finish(&mut got);
        assert_eq!(got[0], [7; 32], "appended after what was there");
        for (g, i) in got[1..].iter().zip(&inputs) {
            assert_eq!(g, blake3::hash(i).as_bytes());
        }
    }
}
