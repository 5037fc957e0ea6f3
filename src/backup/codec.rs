//! How the bytes of a backup file are stored, in one place: what the file holds (plain SQL,
//! or a pg_dump custom-format archive), how it is compressed (gzip, zstd, or not at all when
//! pg_dump compressed the archive itself) and whether it is encrypted with age. The file name
//! says all three (`postgres_db_app.sql.zst.age`), so a reader needs nothing else.
//!
//! The writer is one stack of layers (content → compression → age → SHA-256 of the stored
//! bytes → file) and the reader its mirror image (stored bytes → age → decompression →
//! content), so `dump`, `verify`, `restore` and `adopt` never branch on a format: a new
//! compression or cipher is one more layer here.

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// SQL, as `pg_dump --create` writes it: `gunzip -c | psql` restores it.
    #[default]
    Plain,
    /// `pg_dump -Fc`: pg_restore restores it, in parallel with `-j`.
    Custom,
}

impl Format {
    pub fn parse(value: &str) -> Option<Format> {
        match value.to_ascii_lowercase().as_str() {
            "plain" => Some(Format::Plain),
            "custom" => Some(Format::Custom),
            _ => None,
        }
    }
}

/// How the content is compressed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    /// A custom-format archive: pg_dump compressed its data blocks itself.
    None,
}

impl Compression {
    pub fn parse(value: &str) -> Option<Compression> {
        match value.to_ascii_lowercase().as_str() {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// The level used when BACKUP_COMPRESSION_LEVEL is not set, and the allowed range.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }

    pub fn levels(self) -> (u32, u32) {
        match self {
            Compression::Gzip => (1, 9),
            Compression::Zstd => (1, 19),
            Compression::None => (0, 0),
        }
    }
}

const AGE: &str = ".age";
const DUMP: &str = ".dump";

/// What a file name says about its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCodec {
    pub format: Format,
    pub compression: Compression,
    pub encrypted: bool,
}

impl FileCodec {
    /// The codec of a backup file, from its name; `None` for a name that is not one of ours.
    pub fn of_name(name: &str) -> Option<FileCodec> {
        let (base, encrypted) = match name.strip_suffix(AGE) {
            Some(b) => (b, true),
            None => (name, false),
        };
        let (format, compression) = if base.ends_with(".sql.gz") {
            (Format::Plain, Compression::Gzip)
        } else if base.ends_with(".sql.zst") {
            (Format::Plain, Compression::Zstd)
        } else if base.ends_with(DUMP) {
            (Format::Custom, Compression::None)
        } else {
            return None;
        };
        Some(FileCodec {
            format,
            compression,
            encrypted,
        })
    }

    /// The suffix of a file of this codec: `.sql.gz`, `.sql.zst.age`, `.dump`…
    pub fn suffix(self) -> String {
        let base = match (self.format, self.compression) {
            (Format::Custom, _) | (_, Compression::None) => DUMP,
            (Format::Plain, Compression::Gzip) => ".sql.gz",
            (Format::Plain, Compression::Zstd) => ".sql.zst",
        };
        format!("{base}{}", if self.encrypted { AGE } else { "" })
    }
}

/// The files of one backup, as the settings of the run name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub format: Format,
    pub compression: Compression,
    pub encrypted: bool,
}

impl Layout {
    /// Globals and the cluster file are always plain SQL, compressed.
    pub fn sql(&self) -> FileCodec {
        FileCodec {
            format: Format::Plain,
            compression: self.compression,
            encrypted: self.encrypted,
        }
    }

    /// One database's file: plain SQL, or a custom archive pg_dump compressed.
    pub fn database(&self) -> FileCodec {
        match self.format {
            Format::Plain => self.sql(),
            Format::Custom => FileCodec {
                format: Format::Custom,
                compression: Compression::None,
                encrypted: self.encrypted,
            },
        }
    }

    pub fn cluster_file(&self) -> String {
        format!("postgres_cluster{}", self.sql().suffix())
    }

    pub fn globals_file(&self) -> String {
        format!("postgres_globals{}", self.sql().suffix())
    }

    pub fn database_file(&self, database: &str) -> String {
        super::database_file_name_with(database, &self.database().suffix())
    }
}

/// One age recipient: a native X25519 key (`age1…`) or an ssh public key.
#[derive(Clone)]
enum AnyRecipient {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl AnyRecipient {
    fn as_dyn(&self) -> &dyn age::Recipient {
        match self {
            AnyRecipient::X25519(r) => r,
            AnyRecipient::Ssh(r) => r,
        }
    }
}

/// Who a backup is encrypted to, as the manifest says it: the kind of key and its fingerprint,
/// never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientInfo {
    /// `x25519`, `ssh-ed25519` or `ssh-rsa`.
    pub kind: String,
    /// `SHA256:…` of the public key (for ssh keys, what `ssh-keygen -l` prints).
    pub fingerprint: String,
}

/// Why a recipient or identity cannot be used.
#[derive(Debug)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fingerprint(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(bytes))
    )
}

/// Parses `age1…`, `ssh-ed25519 AAAA… [comment]` or `ssh-rsa AAAA… [comment]`.
fn parse_recipient(text: &str) -> Result<(AnyRecipient, RecipientInfo), KeyError> {
    let text = text.trim();
    if text.starts_with("age1") {
        let r = age::x25519::Recipient::from_str(text)
            .map_err(|e| KeyError(format!("{text:?} is not an age recipient: {e}")))?;
        return Ok((
            AnyRecipient::X25519(r),
            RecipientInfo {
                kind: "x25519".into(),
                fingerprint: fingerprint(text.as_bytes()),
            },
        ));
    }
    let mut parts = text.split_whitespace();
    let (kind, blob) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if kind == "ssh-ed25519" || kind == "ssh-rsa" {
        let key = format!("{kind} {blob}");
        let r = age::ssh::Recipient::from_str(&key)
            .map_err(|e| KeyError(format!("the {kind} key is not usable: {e:?}")))?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| KeyError(format!("the {kind} key is not valid base64")))?;
        return Ok((
            AnyRecipient::Ssh(r),
            RecipientInfo {
                kind: kind.into(),
                fingerprint: fingerprint(&raw),
            },
        ));
    }
    Err(KeyError(format!(
        "{:?} is neither an age recipient (age1…) nor an ssh-ed25519/ssh-rsa public key",
        text.chars().take(40).collect::<String>()
    )))
}

/// Encryption to the configured recipients, and to a key that lives only in this process
/// (see [`Encryption::assembly_identity`]).
pub struct Encryption {
    recipients: Vec<AnyRecipient>,
    infos: Vec<RecipientInfo>,
    ephemeral: age::x25519::Identity,
    ephemeral_public: age::x25519::Recipient,
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryption")
            .field("recipients", &self.infos)
            .finish_non_exhaustive()
    }
}

impl Encryption {
    /// From `AGE_RECIPIENTS` (comma or space separated; an ssh key keeps its spaces when the
    /// list is comma separated) and/or the lines of an `AGE_RECIPIENTS_FILE` (age's
    /// recipients-file format: one per line, `#` comments).
    pub fn parse(list: &str, file_lines: &str) -> Result<Option<Encryption>, KeyError> {
        let mut items: Vec<String> = Vec::new();
        if list.contains(',') || list.contains("ssh-") {
            items.extend(list.split([',', '\n']).map(str::to_string));
        } else {
            items.extend(list.split_whitespace().map(str::to_string));
        }
        items.extend(file_lines.lines().map(str::to_string));
        let mut recipients = Vec::new();
        let mut infos = Vec::new();
        for item in items {
            let item = item.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let (r, info) = parse_recipient(item)?;
            recipients.push(r);
            infos.push(info);
        }
        if recipients.is_empty() {
            return Ok(None);
        }
        let ephemeral = age::x25519::Identity::generate();
        let ephemeral_public = ephemeral.to_public();
        Ok(Some(Encryption {
            recipients,
            infos,
            ephemeral,
            ephemeral_public,
        }))
    }

    pub fn recipients(&self) -> &[RecipientInfo] {
        &self.infos
    }

    /// A file encrypted to the recipients; `assembly` adds the in-process key, so that `dump`
    /// can read the file back (to build the cluster file from it) without any plaintext ever
    /// reaching the disk. That key is never written anywhere and is gone when the run ends.
    fn encryptor(&self, assembly: bool) -> std::io::Result<age::Encryptor> {
        let mut list: Vec<&dyn age::Recipient> =
            self.recipients.iter().map(AnyRecipient::as_dyn).collect();
        if assembly {
            list.push(&self.ephemeral_public);
        }
        age::Encryptor::with_recipients(list.into_iter())
            .map_err(|e| std::io::Error::other(format!("age: {e}")))
    }

    /// The in-process key of [`Encryption::encryptor`].
    pub fn assembly_identity(&self) -> &age::x25519::Identity {
        &self.ephemeral
    }
}

/// The private keys `verify` and `restore` decrypt with (`AGE_IDENTITY_FILE`).
pub struct Decryption {
    x25519: Vec<age::x25519::Identity>,
    ssh: Vec<age::ssh::Identity>,
}

impl fmt::Debug for Decryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decryption({} keys)", self.x25519.len() + self.ssh.len())
    }
}

impl Decryption {
    /// age identities (`AGE-SECRET-KEY-1…`, one per line, `#` comments, as age-keygen writes
    /// them) or one unencrypted ssh private key.
    pub fn parse(text: &str) -> Result<Decryption, KeyError> {
        if text.contains("-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(std::io::Cursor::new(text.as_bytes()), None)
                .map_err(|e| KeyError(format!("not a usable ssh private key: {e}")))?;
            return match id {
                age::ssh::Identity::Unencrypted(_) => Ok(Decryption {
                    x25519: Vec::new(),
                    ssh: vec![id],
                }),
                age::ssh::Identity::Encrypted(_) => Err(KeyError(
                    "the ssh private key is protected by a passphrase, which a non-interactive \
                     run cannot type: use an age identity (age-keygen) or an unprotected copy"
                        .into(),
                )),
                age::ssh::Identity::Unsupported(_) => Err(KeyError(
                    "this kind of ssh key is not supported by age".into(),
                )),
            };
        }
        let mut x25519 = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line itself is secret: never in a message.
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                KeyError(format!(
                    "line {} is not an age identity (AGE-SECRET-KEY-1…)",
                    n + 1
                ))
            })?;
            x25519.push(id);
        }
        if x25519.is_empty() {
            return Err(KeyError("it holds no identity".into()));
        }
        Ok(Decryption {
            x25519,
            ssh: Vec::new(),
        })
    }

    fn identities(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.x25519
            .iter()
            .map(|i| i as &dyn age::Identity)
            .chain(self.ssh.iter().map(|i| i as &dyn age::Identity))
    }
}

/// A read or write that failed because of the cipher, not the disk: a wrong key, a damaged or
/// cut-off age stream.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("none of the keys in AGE_IDENTITY_FILE can open it (encrypted to other recipients)")]
    WrongKey,
    #[error("the age stream is damaged or cut short: {0}")]
    Damaged(String),
}

/// The decrypting, decompressing mirror of the writer: the content of a stored file.
pub fn open_content(
    stored: Box<dyn Read + Send>,
    codec: FileCodec,
    keys: Option<&Decryption>,
) -> std::io::Result<Box<dyn Read + Send>> {
    open_content_tapped(stored, codec, keys, None)
}

/// The SHA-256 of a file's decrypted bytes, taken while they are decompressed.
pub type PlainHash = std::sync::Arc<std::sync::Mutex<Sha256>>;

/// [`open_content`], hashing the decrypted (still compressed) bytes into `tap`: what
/// `content_sha256` of an encrypted file covers.
pub fn open_content_tapped(
    stored: Box<dyn Read + Send>,
    codec: FileCodec,
    keys: Option<&Decryption>,
    tap: Option<PlainHash>,
) -> std::io::Result<Box<dyn Read + Send>> {
    let plain: Box<dyn Read + Send> = if codec.encrypted {
        let Some(keys) = keys else {
            return Err(std::io::Error::other(
                "an encrypted file needs AGE_IDENTITY_FILE to be read",
            ));
        };
        Box::new(decrypt(stored, keys.identities())?)
    } else {
        stored
    };
    let plain: Box<dyn Read + Send> = match tap {
        Some(hash) => Box::new(Tapped { inner: plain, hash }),
        None => plain,
    };
    Ok(match codec.compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            256 * 1024,
            plain,
        ))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(plain)
                .map_err(|e| std::io::Error::other(format!("zstd: {e}")))?,
        ),
        Compression::None => plain,
    })
}

struct Tapped {
    inner: Box<dyn Read + Send>,
    hash: PlainHash,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hash.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Decrypts with the in-process key of a dump (to assemble the cluster file).
pub fn open_for_assembly(
    stored: Box<dyn Read + Send>,
    enc: &Encryption,
) -> std::io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(decrypt(
        stored,
        std::iter::once(enc.assembly_identity() as &dyn age::Identity),
    )?))
}

type AgeReader = MarkDamaged<age::stream::StreamReader<BufReader<Box<dyn Read + Send>>>>;

fn decrypt<'a>(
    stored: Box<dyn Read + Send>,
    identities: impl Iterator<Item = &'a dyn age::Identity>,
) -> std::io::Result<AgeReader> {
    let reader = BufReader::with_capacity(256 * 1024, stored);
    let decryptor = age::Decryptor::new_buffered(reader).map_err(cipher_error)?;
    let stream = decryptor.decrypt(identities).map_err(cipher_error)?;
    Ok(MarkDamaged(stream))
}

fn cipher_error(e: age::DecryptError) -> std::io::Error {
    match e {
        age::DecryptError::NoMatchingKeys => std::io::Error::other(CipherError::WrongKey),
        age::DecryptError::Io(io) => io,
        other => std::io::Error::other(CipherError::Damaged(other.to_string())),
    }
}

/// Read errors of an age stream are about the stream (a bad tag, a cut), not the disk.
struct MarkDamaged<R>(R);

impl<R: Read> Read for MarkDamaged<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.get_ref().is_some_and(|i| i.is::<super::SourceLost>()) {
                e
            } else {
                std::io::Error::other(CipherError::Damaged(e.to_string()))
            }
        })
    }
}

/// The cipher layer of the writer.
pub enum Sealed<W: Write> {
    Clear(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    pub fn new(inner: W, enc: Option<&Encryption>, assembly: bool) -> std::io::Result<Sealed<W>> {
        match enc {
            None => Ok(Sealed::Clear(inner)),
            Some(e) => Ok(Sealed::Age(e.encryptor(assembly)?.wrap_output(inner)?)),
        }
    }

    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Sealed::Clear(w) => Ok(w),
            Sealed::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sealed::Clear(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sealed::Clear(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

/// Worker threads for one zstd stream: the machine's cores, at most 4 (more buys nothing
/// against one pg_dump and costs memory).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

/// The compression layer of the writer.
pub enum Packed<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Raw(W),
}

impl<W: Write> Packed<W> {
    pub fn new(inner: W, compression: Compression, level: u32) -> std::io::Result<Packed<W>> {
        Ok(match compression {
            Compression::Gzip => Packed::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(inner, level as i32)?;
                // zstd's own worker threads: one pg_dump stream is compressed on every core
                // (still one frame, byte-identical in meaning), so compression keeps up with
                // a fast pg_dump. Memory stays bounded by the workers' job buffers.
                let workers = zstd_workers();
                if workers > 1 {
                    encoder.multithread(workers)?;
                    // 2 MiB jobs (zstd picks 8 MiB at level 3): a quarter of the buffers,
                    // so a dump stays within 64 MiB, for a ratio within 1 % of one thread.
                    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(2 << 20))?;
                }
                Packed::Zstd(encoder)
            }
            Compression::None => Packed::Raw(inner),
        })
    }

    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Packed::Gzip(w) => w.finish(),
            Packed::Zstd(w) => w.finish(),
            Packed::Raw(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Packed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Packed::Gzip(w) => w.write(buf),
            Packed::Zstd(w) => w.write(buf),
            Packed::Raw(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Packed::Gzip(w) => w.flush(),
            Packed::Zstd(w) => w.flush(),
            Packed::Raw(w) => w.flush(),
        }
    }
}

/// Compresses `text` as one whole member (gzip) or frame (zstd), to be appended to a file of
/// concatenated members, which `gunzip -c` and `zstd -dc` read as one stream.
pub fn compress_member(
    text: &[u8],
    compression: Compression,
    level: u32,
) -> std::io::Result<Vec<u8>> {
    match compression {
        // A small piece of text: one frame from the calling thread.
        Compression::Zstd => zstd::bulk::compress(text, level as i32),
        _ => {
            let mut w = Packed::new(Vec::new(), compression, level)?;
            w.write_all(text)?;
            w.finish()
        }
    }
}

/// The run's encryption, shared by the writers of every file.
pub type SharedEncryption = Option<Arc<Encryption>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_how_a_file_is_stored() {
        let cases = [
            (
                "postgres_db_a.sql.gz",
                Format::Plain,
                Compression::Gzip,
                false,
            ),
            (
                "postgres_cluster.sql.zst",
                Format::Plain,
                Compression::Zstd,
                false,
            ),
            (
                "postgres_db_a.dump",
                Format::Custom,
                Compression::None,
                false,
            ),
            (
                "postgres_db_a.sql.gz.age",
                Format::Plain,
                Compression::Gzip,
                true,
            ),
            (
                "postgres_db_a.dump.age",
                Format::Custom,
                Compression::None,
                true,
            ),
        ];
        for (name, format, compression, encrypted) in cases {
            let c = FileCodec::of_name(name).unwrap();
            assert_eq!(
                (c.format, c.compression, c.encrypted),
                (format, compression, encrypted)
            );
            assert!(name.ends_with(&c.suffix()), "{name}");
        }
        assert!(FileCodec::of_name("manifest.json").is_none());
    }

    #[test]
    fn layouts_name_every_file() {
        let l = Layout {
            format: Format::Custom,
            compression: Compression::Zstd,
            encrypted: true,
        };
        assert_eq!(l.globals_file(), "postgres_globals.sql.zst.age");
        assert_eq!(l.database_file("my db"), "postgres_db_my%20db.dump.age");
    }

    fn round_trip(
        compression: Compression,
        enc: Option<&Encryption>,
        keys: Option<&Decryption>,
    ) -> Vec<u8> {
        let mut stored = Vec::new();
        {
            let sealed = Sealed::new(&mut stored, enc, false).unwrap();
            let mut packed = Packed::new(sealed, compression, 3).unwrap();
            packed.write_all(b"SELECT 1;\n").unwrap();
            packed.finish().unwrap().finish().unwrap();
        }
        let codec = FileCodec {
            format: Format::Plain,
            compression,
            encrypted: enc.is_some(),
        };
        let mut out = Vec::new();
        open_content(Box::new(std::io::Cursor::new(stored)), codec, keys)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn what_is_written_reads_back_through_every_layer() {
        let key = age::x25519::Identity::generate();
        let public = key.to_public().to_string();
        let enc = Encryption::parse(&public, "").unwrap().unwrap();
        let keys =
            Decryption::parse(age::secrecy::ExposeSecret::expose_secret(&key.to_string())).unwrap();
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            assert_eq!(round_trip(compression, None, None), b"SELECT 1;\n");
            assert_eq!(
                round_trip(compression, Some(&enc), Some(&keys)),
                b"SELECT 1;\n"
            );
        }
    }

    #[test]
    fn the_wrong_key_is_told_apart_from_damage() {
        let enc = Encryption::parse(
            &age::x25519::Identity::generate().to_public().to_string(),
            "",
        )
        .unwrap()
        .unwrap();
        let other = age::x25519::Identity::generate();
        let keys = Decryption::parse(age::secrecy::ExposeSecret::expose_secret(
            &other.to_string(),
        ))
        .unwrap();
        let mut stored = Vec::new();
        let mut sealed = Sealed::new(&mut stored, Some(&enc), false).unwrap();
        sealed.write_all(b"x").unwrap();
        sealed.finish().unwrap();
        let codec = FileCodec::of_name("a.dump.age").unwrap();
        let err = open_content(Box::new(std::io::Cursor::new(stored)), codec, Some(&keys))
            .err()
            .unwrap();
        assert!(matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<CipherError>()),
            Some(CipherError::WrongKey)
        ));
    }

    #[test]
    fn recipients_parse_from_lists_and_files() {
        let a = age::x25519::Identity::generate().to_public().to_string();
        let b = age::x25519::Identity::generate().to_public().to_string();
        let enc = Encryption::parse(&format!("{a} {b}"), "# comment\n")
            .unwrap()
            .unwrap();
        assert_eq!(enc.recipients().len(), 2);
        assert!(enc.recipients()[0].fingerprint.starts_with("SHA256:"));
        assert!(Encryption::parse("", "").unwrap().is_none());
        assert!(Encryption::parse("not-a-key", "").is_err());
    }
}
