//! The MySQL client/server protocol as the sandbox's RonDB speaks it: packets framed with a
//! 3-byte length and a sequence id, handshake v10 with `mysql_native_password`, and text
//! result sets with EOF packets (no `CLIENT_DEPRECATE_EOF`). The packets' layouts are
//! mysql_common's, the crate the MySQL client uses.

use super::sql::{self, Kind, ResultSet, SqlError};
use super::{Inner, lock};
use mysql_common::constants::{CapabilityFlags, ColumnFlags, ColumnType, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{Column, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use rand::Rng;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server reports as its version (RonDB 22.10's MySQL server).
const SERVER_VERSION: &str = "8.0.34-cluster";
/// `utf8mb4_0900_ai_ci`.
const COLLATION: u8 = 255;
/// `utf8mb4_general_ci` on result columns; `binary` (63) on numbers.
const TEXT_CHARSET: u16 = 45;
const BINARY_CHARSET: u16 = 63;
const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";
/// Larger packets are refused (the client sends nothing near it).
const MAX_PACKET: usize = 1 << 20;

/// `len` printable characters (no NUL or `$`, as a scramble must not hold).
pub(super) fn random_text(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from(rng.gen_range(b'0'..=b'z'))).collect()
}

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut next_id = 1_u32;
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let inner = Arc::clone(&inner);
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        tokio::spawn(async move {
            let mut conn = Conn { stream, seq: 0 };
            // A connection ends with the client's quit, a refusal, or a broken socket alike.
            let _ = conn.run(&inner, id, &peer.ip().to_string()).await;
        });
    }
}

struct Conn {
    stream: TcpStream,
    seq: u8,
}

impl Conn {
    async fn read(&mut self) -> std::io::Result<Vec<u8>> {
        let mut header = [0_u8; 4];
        self.stream.read_exact(&mut header).await?;
        let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if len > MAX_PACKET {
            return Err(std::io::Error::other("packet too large"));
        }
        self.seq = header[3].wrapping_add(1);
        let mut payload = vec![0_u8; len];
        self.stream.read_exact(&mut payload).await?;
        Ok(payload)
    }

    async fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        let mut packet = Vec::with_capacity(payload.len() + 4);
        packet.extend_from_slice(&len.to_le_bytes()[..3]);
        packet.push(self.seq);
        packet.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&packet).await
    }

    async fn ok(&mut self) -> std::io::Result<()> {
        let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits().to_le_bytes();
        self.write(&[0x00, 0x00, 0x00, status[0], status[1], 0x00, 0x00]).await
    }

    async fn eof(&mut self) -> std::io::Result<()> {
        let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits().to_le_bytes();
        self.write(&[0xfe, 0x00, 0x00, status[0], status[1]]).await
    }

    async fn error(&mut self, e: &SqlError) -> std::io::Result<()> {
        let mut payload = vec![0xff];
        payload.extend_from_slice(&e.code.to_le_bytes());
        payload.push(b'#');
        payload.extend_from_slice(&e.state);
        payload.extend_from_slice(e.message.as_bytes());
        self.write(&payload).await?;
        self.stream.flush().await
    }

    async fn result_set(&mut self, set: &ResultSet) -> std::io::Result<()> {
        let mut count = Vec::new();
        put_lenenc_int(&mut count, set.columns.len() as u64);
        self.write(&count).await?;
        for (name, kind) in &set.columns {
            let (ty, flags, charset, length) = match kind {
                Kind::Text => (ColumnType::MYSQL_TYPE_VAR_STRING, ColumnFlags::empty(), TEXT_CHARSET, 2048),
                Kind::Int => (ColumnType::MYSQL_TYPE_LONG, ColumnFlags::UNSIGNED_FLAG, BINARY_CHARSET, 10),
                Kind::BigInt => (ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::UNSIGNED_FLAG, BINARY_CHARSET, 20),
            };
            let column = Column::new(ty)
                .with_schema(set.schema.as_bytes())
                .with_table(set.table.as_bytes())
                .with_org_table(set.table.as_bytes())
                .with_name(name.as_bytes())
                .with_org_name(name.as_bytes())
                .with_flags(flags)
                .with_character_set(charset)
                .with_column_length(length);
            let mut buf = Vec::new();
            column.serialize(&mut buf);
            self.write(&buf).await?;
        }
        self.eof().await?;
        for row in &set.rows {
            let mut buf = Vec::new();
            for value in row {
                put_lenenc_int(&mut buf, value.len() as u64);
                buf.extend_from_slice(value.as_bytes());
            }
            self.write(&buf).await?;
        }
        self.eof().await?;
        self.stream.flush().await
    }

    async fn run(&mut self, inner: &Inner, id: u32, host: &str) -> std::io::Result<()> {
        let nonce = random_text(20).into_bytes();
        let (part1, part2) = nonce.split_at(8);
        let mut scramble_1 = [0_u8; 8];
        scramble_1.copy_from_slice(part1);
        let mut scramble_2 = part2.to_vec();
        scramble_2.push(0);
        let capabilities = CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_FOUND_ROWS
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let handshake = HandshakePacket::new(
            10,
            SERVER_VERSION.as_bytes(),
            id,
            scramble_1,
            Some(scramble_2),
            capabilities,
            COLLATION,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(NATIVE_PASSWORD),
        );
        let mut buf = Vec::new();
        handshake.serialize(&mut buf);
        self.seq = 0;
        self.write(&buf).await?;

        let payload = self.read().await?;
        let response: HandshakeResponse<'_> = ParseBuf(&payload).parse(())?;
        let user = String::from_utf8_lossy(response.user()).into_owned();
        let db = response.db_name().map(|d| String::from_utf8_lossy(d).into_owned()).filter(|d| !d.is_empty());
        let given = response.scramble_buf().to_vec();
        let account = lock(&inner.state).accounts.get(&user).cloned();
        let Some(account) = account.filter(|a| {
            let expected = mysql_common::scramble::scramble_native(&nonce, a.password.as_bytes());
            expected.map_or(given.is_empty(), |e| e.as_slice() == given.as_slice())
        }) else {
            return self.error(&SqlError::access_denied(&user, host, !given.is_empty())).await;
        };
        let mut current = None;
        if let Some(db) = db {
            if let Err(e) = check_db(inner, &account, &user, host, &db) {
                return self.error(&e).await;
            }
            current = Some(db);
        }
        self.ok().await?;
        self.stream.flush().await?;

        loop {
            let payload = self.read().await?;
            let delay = lock(&inner.state).delay;
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match payload.split_first() {
                None | Some((0x01, _)) => return Ok(()),
                Some((0x0e, _)) => {
                    self.ok().await?;
                    self.stream.flush().await?;
                }
                Some((0x02, name)) => {
                    let name = String::from_utf8_lossy(name).into_owned();
                    match check_db(inner, &account, &user, host, &name) {
                        Ok(()) => {
                            current = Some(name);
                            self.ok().await?;
                            self.stream.flush().await?;
                        }
                        Err(e) => self.error(&e).await?,
                    }
                }
                Some((0x03, statement)) => {
                    let statement = String::from_utf8_lossy(statement).into_owned();
                    let answer = {
                        let mut state = lock(&inner.state);
                        state.queries.push((user.clone(), statement.clone()));
                        sql::run(&state, &account, &user, host, current.as_deref(), &statement)
                    };
                    match answer {
                        Ok(set) => self.result_set(&set).await?,
                        Err(e) => self.error(&e).await?,
                    }
                }
                Some(_) => self.error(&SqlError::unknown_command()).await?,
            }
        }
    }
}

fn check_db(inner: &Inner, account: &super::Account, user: &str, host: &str, db: &str) -> Result<(), SqlError> {
    if !account.can_use(db) {
        return Err(SqlError::db_access_denied(user, host, db));
    }
    let exists = db.eq_ignore_ascii_case("ndbinfo") || lock(&inner.state).databases.contains_key(db);
    if exists { Ok(()) } else { Err(SqlError::unknown_database(db)) }
}

fn put_lenenc_int(buf: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => buf.push(u8::try_from(n).unwrap_or(0)),
        251..=0xffff => {
            buf.push(0xfc);
            buf.extend_from_slice(&n.to_le_bytes()[..2]);
        }
        0x1_0000..=0xff_ffff => {
            buf.push(0xfd);
            buf.extend_from_slice(&n.to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xfe);
            buf.extend_from_slice(&n.to_le_bytes());
        }
    }
}
