//! Where a key lives: the publisher's murmur2 partitioner, and consistency tokens read back.

use crate::publish::Delivery;

/// The partition the publisher writes `key` to, among `partitions`: murmur2 of the key, made
/// positive, modulo the partition count (librdkafka's `murmur2_random` and the Java client's
/// default partitioner agree).
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    // Java's murmur2 takes the length as an int; keys are far shorter than 4 GiB.
    let mut h: u32 = SEED ^ (key.len() as u32);
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    let partitions = partitions.max(1).unsigned_abs();
    // Less than `partitions`, an i32.
    ((h & 0x7fff_ffff) % partitions) as i32
}

/// Reads a consistency token (`partition:offset`, [`Delivery`]'s text form) back, e.g. from a
/// query parameter.
pub fn parse_token(token: &str) -> Option<Delivery> {
    let (partition, offset) = token.trim().split_once(':')?;
    let (partition, offset) = (partition.parse().ok()?, offset.parse().ok()?);
    (partition >= 0 && offset >= 0).then_some(Delivery { partition, offset })
}
