//! Just enough of a BTF reader to find struct member offsets in
//! `/sys/kernel/btf/vmlinux`. The eBPF programs are written in Rust, which has no
//! CO-RE relocations, so the daemon resolves the offsets of the few kernel fields
//! they read (`task_struct.exit_code`, ...) at load time and passes them in as
//! globals. aya-obj does not expose member offsets, and the btf-rs crate is LGPL.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>.

use std::collections::HashMap;

/// Why a BTF blob could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF data (bad magic or truncated header)")]
    BadHeader,
    #[error("BTF type section is truncated at type {id}")]
    Truncated { id: u32 },
    #[error("BTF type kind {kind} of type {id} is unknown to this reader")]
    UnknownKind { id: u32, kind: u32 },
    #[error("struct `{0}` not found in kernel BTF")]
    NoStruct(String),
    #[error("struct `{strukt}` has no member `{member}` in kernel BTF")]
    NoMember { strukt: String, member: String },
    #[error("`{what}` in kernel BTF has a shape this reader does not expect")]
    Shape { what: String },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// A struct or union: its size and members.
#[derive(Clone)]
struct Composite {
    size: u32,
    members: Vec<Member>,
}

/// A member found in a struct: where it is and what type it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Byte offset from the start of the struct searched.
    pub offset: u32,
    /// The member's type id, modifiers and typedefs seen through.
    pub type_id: u32,
}

/// The composites of a BTF blob by type id, and named structs by name.
pub struct Btf {
    strings: Vec<u8>,
    composites: HashMap<u32, Composite>,
    /// Arrays: element type id and element count.
    arrays: HashMap<u32, (u32, u32)>,
    /// Sizes of integers (composites keep their own).
    int_sizes: HashMap<u32, u32>,
    /// Type ids of modifiers and typedefs, to see through `const struct x`.
    aliases: HashMap<u32, u32>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Parses a little-endian BTF blob, keeping only what member lookups need.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data.get(0..2).ok_or(BtfError::BadHeader)?;
        if magic != [0x9f, 0xeb] {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(data, 4).ok_or(BtfError::BadHeader)? as usize;
        let type_off = u32_at(data, 8).ok_or(BtfError::BadHeader)? as usize;
        let type_len = u32_at(data, 12).ok_or(BtfError::BadHeader)? as usize;
        let str_off = u32_at(data, 16).ok_or(BtfError::BadHeader)? as usize;
        let str_len = u32_at(data, 20).ok_or(BtfError::BadHeader)? as usize;
        let types = data.get(hdr_len + type_off..hdr_len + type_off + type_len).ok_or(BtfError::BadHeader)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or(BtfError::BadHeader)?.to_vec();

        let mut btf = Btf {
            strings,
            composites: HashMap::new(),
            arrays: HashMap::new(),
            int_sizes: HashMap::new(),
            aliases: HashMap::new(),
            structs_by_name: HashMap::new(),
        };
        let mut at = 0;
        let mut id = 1u32;
        while at < types.len() {
            let name_off = u32_at(types, at).ok_or(BtfError::Truncated { id })?;
            let info = u32_at(types, at + 4).ok_or(BtfError::Truncated { id })?;
            let size_or_type = u32_at(types, at + 8).ok_or(BtfError::Truncated { id })?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
                | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => return Err(BtfError::UnknownKind { id, kind }),
            };
            let body = types.get(at..at + extra).ok_or(BtfError::Truncated { id })?;
            match kind {
                KIND_STRUCT | KIND_UNION => {
                    let members = (0..vlen)
                        .map(|i| {
                            let m = &body[i * 12..];
                            let raw = u32_at(m, 8).unwrap_or(0);
                            Member {
                                name_off: u32_at(m, 0).unwrap_or(0),
                                type_id: u32_at(m, 4).unwrap_or(0),
                                // With kind_flag the top 8 bits hold a bitfield size.
                                bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                            }
                        })
                        .collect();
                    btf.composites.insert(id, Composite { size: size_or_type, members });
                    if kind == KIND_STRUCT && name_off != 0 {
                        let name = btf.string(name_off).to_owned();
                        btf.structs_by_name.entry(name).or_insert(id);
                    }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    btf.aliases.insert(id, size_or_type);
                }
                KIND_ARRAY => {
                    // struct btf_array { type, index_type, nelems }
                    btf.arrays.insert(id, (u32_at(body, 0).unwrap_or(0), u32_at(body, 8).unwrap_or(0)));
                }
                KIND_INT => {
                    btf.int_sizes.insert(id, size_or_type);
                }
                _ => {}
            }
            at += extra;
            id += 1;
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn resolve(&self, mut id: u32) -> u32 {
        // Bounded: a malformed blob could contain an alias cycle.
        for _ in 0..32 {
            match self.aliases.get(&id) {
                Some(&next) => id = next,
                None => break,
            }
        }
        id
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.structs_by_name.get(name).copied().ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// The size in bytes of struct `name`.
    #[cfg(test)]
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.composites[&self.struct_id(name)?].size)
    }

    /// The byte offset of `member` in struct `strukt`, looking through anonymous
    /// structs and unions (the kernel groups many fields in them).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        Ok(self.member(strukt, member)?.offset)
    }

    /// `member` of struct `strukt`: its offset and type.
    pub fn member(&self, strukt: &str, member: &str) -> Result<Found, BtfError> {
        self.member_of(self.struct_id(strukt)?, member)
            .ok_or_else(|| BtfError::NoMember { strukt: strukt.to_owned(), member: member.to_owned() })
    }

    /// `member` of the struct or union with type id `id`.
    pub fn member_of(&self, id: u32, member: &str) -> Option<Found> {
        self.find_member(id, member, 0)
            .map(|(bits, type_id)| Found { offset: bits / 8, type_id: self.resolve(type_id) })
    }

    /// The element type (aliases seen through) and length of array type `id`, or
    /// `None` when `id` is no array.
    pub fn array(&self, id: u32) -> Option<(u32, u32)> {
        self.arrays.get(&self.resolve(id)).map(|&(elem, len)| (self.resolve(elem), len))
    }

    /// The size in bytes of an integer, struct or union type.
    pub fn type_size(&self, id: u32) -> Option<u32> {
        let id = self.resolve(id);
        self.composites.get(&id).map(|c| c.size).or_else(|| self.int_sizes.get(&id).copied())
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32)> {
        let composite = self.composites.get(&self.resolve(id))?;
        for m in &composite.members {
            if m.name_off != 0 && self.string(m.name_off) == member {
                return Some((m.bit_offset, m.type_id));
            }
        }
        if depth > 8 {
            return None;
        }
        composite.members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            let (bits, type_id) = self.find_member(m.type_id, member, depth + 1)?;
            Some((m.bit_offset + bits, type_id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int b; long c; }; int d[4]; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0d\0".to_vec();
        let (outer, a, b, c, int, d) = (1u32, 7, 9, 11, 13, 17);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        push(&[int, KIND_INT << 24, 4, 32]); // id 1: int
        push(&[0, KIND_UNION << 24 | 2, 8, b, 1, 0, c, 1, 0]); // id 2: anonymous union
        push(&[outer, KIND_STRUCT << 24 | 3, 32, a, 1, 0, 0, 2, 64, d, 4, 128]); // id 3: struct outer
        push(&[0, KIND_ARRAY << 24, 0, 1, 1, 4]); // id 4: int[4]
        let mut data = Vec::new();
        for w in [0xeb9f_u32 | 1 << 16, 24, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert_eq!(btf.struct_size("outer").unwrap(), 32);
        let d = btf.member("outer", "d").unwrap();
        assert_eq!(d.offset, 16);
        assert_eq!(btf.array(d.type_id), Some((1, 4)));
        assert_eq!(btf.type_size(1), Some(4));
        assert_eq!(btf.array(1), None);
        assert!(matches!(btf.member_offset("outer", "zz"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.member_offset("nope", "a"), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 255, 255, 255, 255]).is_err());
        let mut cut = blob();
        cut.truncate(40);
        assert!(Btf::parse(&cut).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!(
                "skipped kernel::btf::tests::reads_the_running_kernel: /sys/kernel/btf/vmlinux is not readable here"
            );
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let exit_code = btf.member_offset("task_struct", "exit_code").unwrap();
        let exit_state = btf.member_offset("task_struct", "exit_state").unwrap();
        // Declared next to each other in include/linux/sched.h.
        assert_eq!(exit_code, exit_state + 4);
        assert!(btf.member_offset("mm_struct", "rss_stat").is_ok());
    }
}
