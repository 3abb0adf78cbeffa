//! Export names: `<vm>-disk-<key>`, at most 63 bytes, unique. A VM name too long to fit is cut at
//! a character boundary and followed by a hash of the whole name, so two long names that share a
//! prefix still get different exports.

/// Longest export name Sendense uses.
pub const MAX_EXPORT_NAME: usize = 63;

/// The export name of disk `key` of `vm`.
pub fn export_name(vm: &str, key: u32) -> String {
    let suffix = format!("-disk-{key}");
    let full = format!("{vm}{suffix}");
    if full.len() <= MAX_EXPORT_NAME {
        return full;
    }
    let hash = blake3::hash(vm.as_bytes()).to_hex();
    let tag = format!("-{}", &hash[..10]);
    let room = MAX_EXPORT_NAME - suffix.len() - tag.len();
    let mut cut = room.min(vm.len());
    while !vm.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}{suffix}", &vm[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(export_name("pgtest1", 2000), "pgtest1-disk-2000");
        let exact = "a".repeat(MAX_EXPORT_NAME - "-disk-2000".len());
        assert_eq!(export_name(&exact, 2000).len(), MAX_EXPORT_NAME);
        assert!(export_name(&exact, 2000).starts_with(&exact));
    }

    #[test]
    fn long_names_are_shortened_uniquely() {
        let a = format!("{}-a", "x".repeat(198));
        let b = format!("{}-b", "x".repeat(198));
        let (na, nb) = (export_name(&a, 2000), export_name(&b, 2000));
        assert!(
            na.len() <= MAX_EXPORT_NAME && nb.len() <= MAX_EXPORT_NAME,
            "{na} {nb}"
        );
        assert_ne!(na, nb, "same prefix, different VMs");
        assert!(na.ends_with("-disk-2000"));
        assert_ne!(export_name(&a, 2000), export_name(&a, 2001));
        assert_eq!(export_name(&a, 2000), na, "stable");
    }

    #[test]
    fn unicode_is_cut_at_character_boundaries() {
        let vm = "ü".repeat(100); // 200 bytes
        let name = export_name(&vm, 2001);
        assert!(name.len() <= MAX_EXPORT_NAME);
        assert!(name.starts_with("üü"));
        assert!(std::str::from_utf8(name.as_bytes()).is_ok());
        let vm2 = format!("{}x", "ü".repeat(99));
        assert_ne!(export_name(&vm2, 2001), name);
        // Every 200-byte mix of 1-, 2-, 3- and 4-byte characters fits.
        for ch in ["a", "é", "€", "😀"] {
            let v: String = ch.repeat(200 / ch.len());
            assert!(export_name(&v, 2999).len() <= MAX_EXPORT_NAME);
        }
    }
}
