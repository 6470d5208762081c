//! The registry's redb store. Values are the proto messages of `lienthong.registry.v1` and
//! `lienthong.globalconf.v1`, keyed by the canonical id string; one write transaction per change,
//! and every committed change increases the configuration version.

use std::path::Path;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::RegistryError;

pub(crate) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

pub(crate) const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
pub(crate) const SETTINGS: Table = TableDefinition::new("settings");
pub(crate) const MEMBER_CLASSES: Table = TableDefinition::new("member_classes");
pub(crate) const MEMBERS: Table = TableDefinition::new("members");
pub(crate) const NODES: Table = TableDefinition::new("nodes");
pub(crate) const CERTS: Table = TableDefinition::new("certificates");
pub(crate) const SERVICES: Table = TableDefinition::new("services");
pub(crate) const DESCRIPTIONS: Table = TableDefinition::new("service_descriptions");
pub(crate) const GRANTS: Table = TableDefinition::new("grants");
pub(crate) const GROUPS: Table = TableDefinition::new("global_groups");
pub(crate) const PARTNERS: Table = TableDefinition::new("federation_partners");
pub(crate) const CONF_KEYS: Table = TableDefinition::new("conf_signing_keys");
pub(crate) const APPROVED_CAS: Table = TableDefinition::new("approved_cas");
pub(crate) const REQUESTS: Table = TableDefinition::new("requests");
/// The latest checkpoint witnessed for each node (its log's origin).
pub(crate) const WITNESSED: Table = TableDefinition::new("witnessed_checkpoints");

const ALL: [Table; 14] = [
    SETTINGS,
    MEMBER_CLASSES,
    MEMBERS,
    NODES,
    CERTS,
    SERVICES,
    DESCRIPTIONS,
    GRANTS,
    GROUPS,
    PARTNERS,
    CONF_KEYS,
    APPROVED_CAS,
    REQUESTS,
    WITNESSED,
];

const VERSION: &str = "version";

#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
}

/// A write transaction. Dropped without [`Tx::commit`], nothing changes.
pub(crate) struct Tx {
    tx: redb::WriteTransaction,
    changed: bool,
}

/// A consistent read snapshot.
pub(crate) struct Snapshot {
    tx: redb::ReadTransaction,
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, RegistryError> {
    M::decode(bytes).map_err(RegistryError::internal)
}

fn get_in<M: Message + Default>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<M>, RegistryError> {
    t.get(key)?.map(|v| decode(v.value())).transpose()
}

fn all_in<M: Message + Default>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, M)>, RegistryError> {
    let mut out = Vec::new();
    for item in t.iter()? {
        let (k, v) = item?;
        out.push((k.value().to_owned(), decode(v.value())?));
    }
    Ok(out)
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Self, RegistryError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(META)?;
            for t in ALL {
                tx.open_table(t)?;
            }
        }
        tx.commit()?;
        Ok(Self { db })
    }

    pub(crate) fn write(&self) -> Result<Tx, RegistryError> {
        Ok(Tx { tx: self.db.begin_write()?, changed: false })
    }

    pub(crate) fn read(&self) -> Result<Snapshot, RegistryError> {
        Ok(Snapshot { tx: self.db.begin_read()? })
    }
}

impl Tx {
    pub(crate) fn get<M: Message + Default>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<M>, RegistryError> {
        get_in(&self.tx.open_table(table)?, key)
    }

    pub(crate) fn all<M: Message + Default>(&self, table: Table) -> Result<Vec<(String, M)>, RegistryError> {
        all_in(&self.tx.open_table(table)?)
    }

    pub(crate) fn put<M: Message>(
        &mut self,
        table: Table,
        key: &str,
        value: &M,
    ) -> Result<(), RegistryError> {
        self.tx.open_table(table)?.insert(key, value.encode_to_vec().as_slice())?;
        self.changed = true;
        Ok(())
    }

    pub(crate) fn get_bytes(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self.tx.open_table(table)?.get(key)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn remove(&mut self, table: Table, key: &str) -> Result<(), RegistryError> {
        if self.tx.open_table(table)?.remove(key)?.is_some() {
            self.changed = true;
        }
        Ok(())
    }

    pub(crate) fn put_bytes(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), RegistryError> {
        self.tx.open_table(table)?.insert(key, value)?;
        self.changed = true;
        Ok(())
    }

    /// Commits without touching the configuration version: for state that is not part of the
    /// configuration (witnessed checkpoints).
    pub(crate) fn commit_unversioned(self) -> Result<(), RegistryError> {
        self.tx.commit()?;
        Ok(())
    }

    /// Commits; if anything changed, the configuration version goes up by one in the same
    /// transaction. Returns the version now in force.
    pub(crate) fn commit(self) -> Result<u64, RegistryError> {
        let version = {
            let mut meta = self.tx.open_table(META)?;
            let current = meta.get(VERSION)?.map_or(0, |v| v.value());
            let next = if self.changed { current + 1 } else { current };
            meta.insert(VERSION, next)?;
            next
        };
        self.tx.commit()?;
        Ok(version)
    }
}

impl Snapshot {
    pub(crate) fn get<M: Message + Default>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<M>, RegistryError> {
        get_in(&self.tx.open_table(table)?, key)
    }

    pub(crate) fn get_bytes(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self.tx.open_table(table)?.get(key)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn all<M: Message + Default>(&self, table: Table) -> Result<Vec<(String, M)>, RegistryError> {
        all_in(&self.tx.open_table(table)?)
    }

    pub(crate) fn values<M: Message + Default>(&self, table: Table) -> Result<Vec<M>, RegistryError> {
        Ok(self.all(table)?.into_iter().map(|(_, v)| v).collect())
    }

    pub(crate) fn all_bytes(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let t = self.tx.open_table(table)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub(crate) fn version(&self) -> Result<u64, RegistryError> {
        Ok(self.tx.open_table(META)?.get(VERSION)?.map_or(0, |v| v.value()))
    }
}
