//! The `modes` key of a snapshot's `extra` map (SPEC §6.1): the permission bits of its files.
//!
//! A forward-compatible addition (SPEC §8): a reader that does not know the key restores every
//! file with the legacy rule (owner-only, executable by the flag), and a value this reader
//! cannot decode is ignored the same way. Pure: no I/O.

use std::collections::BTreeMap;

/// The `extra` key.
pub const KEY: &str = "modes";
/// The first byte of the value.
pub const VERSION: u8 = 1;
/// The bits recorded and restored: read, write and execute for owner, group and others.
/// Setuid, setgid and sticky are never recorded.
pub const PERMISSION_BITS: u16 = 0o777;
/// Always set on a recorded and a restored mode: a file shelldone restores, it can read again.
pub const OWNER_READ: u16 = 0o400;
/// The executable bit that the tree entry's flag `0x01` decides.
pub const OWNER_EXEC: u16 = 0o100;

/// The mode of a file in a snapshot without a table: owner-only, `0o700` with the executable
/// flag, `0o600` without.
#[must_use]
pub const fn legacy(executable: bool) -> u16 {
    if executable { 0o700 } else { 0o600 }
}

/// The mode recorded for a file whose mode is `st_mode`, with the executable flag derived from
/// the same mode: the permission bits, owner-read added.
#[must_use]
pub const fn recorded(st_mode: u32) -> u16 {
    // Masked to 9 bits first, so the cast cannot truncate.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "masked to 0o777 before the cast"
    )]
    let m = (st_mode & PERMISSION_BITS as u32) as u16;
    m | OWNER_READ
}

/// A snapshot's file modes: a default for files without and with the executable flag, and the
/// files whose mode differs from their default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modes {
    /// Mode of a file without the executable flag and without an entry.
    pub plain: u16,
    /// Mode of a file with the executable flag and without an entry.
    pub exec: u16,
    /// Snapshot path (components joined by `/` from the root tree) → mode.
    pub paths: BTreeMap<Vec<u8>, u16>,
}

impl Default for Modes {
    fn default() -> Self {
        Modes::legacy()
    }
}

impl Modes {
    /// The table that says what a snapshot without one means.
    #[must_use]
    pub fn legacy() -> Self {
        Modes {
            plain: legacy(false),
            exec: legacy(true),
            paths: BTreeMap::new(),
        }
    }

    /// True when this table says nothing the legacy rule does not (a writer then leaves the key
    /// out, so a store whose files are all owner-only writes the bytes it always wrote).
    #[must_use]
    pub fn is_legacy(&self) -> bool {
        *self == Modes::legacy()
    }

    /// The table of a set of files: `(path, executable flag, mode)`. Each default is the most
    /// frequent mode of its class (ties: the lower mode; no file: the legacy mode), and the
    /// other files are listed.
    #[must_use]
    pub fn of<'a>(files: impl IntoIterator<Item = (&'a [u8], bool, u16)>) -> Self {
        let files: Vec<(&[u8], bool, u16)> = files
            .into_iter()
            .map(|(p, x, m)| (p, x, m & PERMISSION_BITS))
            .collect();
        let default = |exec: bool| {
            let mut count: BTreeMap<u16, usize> = BTreeMap::new();
            for (_, x, m) in &files {
                if *x == exec {
                    *count.entry(*m).or_default() += 1;
                }
            }
            // max_by_key keeps the last maximum; iterate high to low so ties pick the lower.
            count
                .iter()
                .rev()
                .max_by_key(|(_, n)| **n)
                .map_or(legacy(exec), |(m, _)| *m)
        };
        let (plain, exec) = (default(false), default(true));
        let paths = files
            .iter()
            .filter(|(_, x, m)| *m != if *x { exec } else { plain })
            .map(|(p, _, m)| (p.to_vec(), *m))
            .collect();
        Modes { plain, exec, paths }
    }

    /// The mode to restore the file at `path` with (SPEC §6.1): its entry or its class's
    /// default, the owner's executable bit from the flag, owner-read added.
    #[must_use]
    pub fn mode(&self, path: &[u8], executable: bool) -> u16 {
        let m = self.paths.get(path).copied().unwrap_or(if executable {
            self.exec
        } else {
            self.plain
        });
        let x = if executable { OWNER_EXEC } else { 0 };
        (m & PERMISSION_BITS & !OWNER_EXEC) | x | OWNER_READ
    }

    /// The value of the `modes` key: version `01`, `plain` u16, `exec` u16, a u32 count, then
    /// each entry as a bytes32 path and a u16 mode, paths strictly ascending.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.paths.len() * 40);
        out.push(VERSION);
        out.extend_from_slice(&self.plain.to_le_bytes());
        out.extend_from_slice(&self.exec.to_le_bytes());
        let n = u32::try_from(self.paths.len()).expect("fewer than 2^32 files in a snapshot");
        out.extend_from_slice(&n.to_le_bytes());
        for (p, m) in &self.paths {
            let len = u32::try_from(p.len()).expect("a path shorter than 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(&m.to_le_bytes());
        }
        out
    }

    /// Decodes a `modes` value; `None` for anything this reader does not accept (another
    /// version, a wrong length, an empty or unsorted path, a mode over `0o777`): the reader then
    /// applies the legacy rule (SPEC §6.1).
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (h, t) = (r.get(..n)?, r.get(n..)?);
            *r = t;
            Some(h)
        }
        fn u16_of(r: &mut &[u8]) -> Option<u16> {
            Some(u16::from_le_bytes(take(r, 2)?.try_into().ok()?))
        }
        fn u32_of(r: &mut &[u8]) -> Option<u32> {
            Some(u32::from_le_bytes(take(r, 4)?.try_into().ok()?))
        }
        let mut r = b;
        if take(&mut r, 1)? != [VERSION] {
            return None;
        }
        let plain = u16_of(&mut r)?;
        let exec = u16_of(&mut r)?;
        let n = u32_of(&mut r)?;
        if plain > PERMISSION_BITS || exec > PERMISSION_BITS {
            return None;
        }
        let mut paths = BTreeMap::new();
        let mut prev: Option<&[u8]> = None;
        for _ in 0..n {
            let len = usize::try_from(u32_of(&mut r)?).ok()?;
            let p = take(&mut r, len)?;
            let m = u16_of(&mut r)?;
            if p.is_empty() || prev.is_some_and(|q| q >= p) || m > PERMISSION_BITS {
                return None;
            }
            prev = Some(p);
            paths.insert(p.to_vec(), m);
        }
        r.is_empty().then_some(Modes { plain, exec, paths })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let files: Vec<(&[u8], bool, u16)> = vec![
            (b"config/a", false, 0o644),
            (b"config/b", false, 0o644),
            (b"config/secret", false, 0o600),
            (b"config/run.sh", true, 0o755),
        ];
        let m = Modes::of(files);
        assert_eq!((m.plain, m.exec), (0o644, 0o755));
        assert_eq!(m.paths.len(), 1);
        assert_eq!(m.mode(b"config/secret", false), 0o600);
        assert_eq!(m.mode(b"config/a", false), 0o644);
        assert_eq!(m.mode(b"config/run.sh", true), 0o755);
        // The flag decides the owner's executable bit.
        assert_eq!(m.mode(b"config/secret", true), 0o700);
        assert_eq!(Modes::decode(&m.encode()), Some(m.clone()));
        // Worked example (SPEC §6.1).
        assert_eq!(
            m.encode(),
            [
                &[1u8, 0xa4, 0x01, 0xed, 0x01, 1, 0, 0, 0, 13, 0, 0, 0][..],
                b"config/secret",
                &[0x80, 0x01]
            ]
            .concat()
        );
        assert!(Modes::of(Vec::new()).is_legacy());
        assert_eq!(Modes::legacy().mode(b"x", false), 0o600);
    }

    #[test]
    fn bad_values_are_refused() {
        let good = Modes::of(vec![(&b"config/x"[..], false, 0o640)]).encode();
        assert!(Modes::decode(&good).is_some());
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(Modes::decode(&v2), None);
        assert_eq!(Modes::decode(&good[..good.len() - 1]), None);
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Modes::decode(&long), None);
        let mut high = good;
        let n = high.len();
        high[n - 1] = 0x02; // 0o1000 and up
        assert_eq!(Modes::decode(&high), None);
    }
}
