//! What flows between stages: the logical streams of a session, and the batches of typed rows they carry (the
//! client's input rows, the partial aggregates between stages, the result rows). The envelope around them is
//! [`crate::wire`].

use crate::keys::{partition, Query, YearHalf, YearMonth};
use crate::model::{Date, MenuItem, Store, Transaction, TransactionItem, User};
use crate::results::ResultRow;
use serde::{Deserialize, Serialize};

/// A logical stream of one session. A receiver counts data messages and EOFs per (stream, sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stream {
    Transactions,
    TransactionItems,
    Users,
    Stores,
    MenuItems,
    Q2Partial,
    Q3Partial,
    Q4Partial,
    Q4Candidates,
    Results(Query),
    /// Not a data stream: what concerns the whole session at once (a purge). Last, so the data streams'
    /// encoding is unchanged.
    Session,
}

impl Stream {
    /// A batch of no rows of the kind this stream carries (none for [`Stream::Session`], which carries no rows).
    pub fn empty_batch(self) -> Option<Batch> {
        Some(match self {
            Stream::Transactions => Batch::Transactions(Vec::new()),
            Stream::TransactionItems => Batch::TransactionItems(Vec::new()),
            Stream::Users => Batch::Users(Vec::new()),
            Stream::Stores => Batch::Stores(Vec::new()),
            Stream::MenuItems => Batch::MenuItems(Vec::new()),
            Stream::Q2Partial => Batch::ItemSales(Vec::new()),
            Stream::Q3Partial => Batch::StoreTpv(Vec::new()),
            Stream::Q4Partial => Batch::Purchases(Vec::new()),
            Stream::Q4Candidates => Batch::Candidates(Vec::new()),
            Stream::Results(_) => Batch::Results(Vec::new()),
            Stream::Session => return None,
        })
    }

    /// Whether `batch` is what this stream carries: anything else on it is a poison message.
    pub fn carries(&self, batch: &Batch) -> bool {
        matches!(
            (self, batch),
            (Stream::Transactions, Batch::Transactions(_))
                | (Stream::TransactionItems, Batch::TransactionItems(_))
                | (Stream::Users, Batch::Users(_))
                | (Stream::Stores, Batch::Stores(_))
                | (Stream::MenuItems, Batch::MenuItems(_))
                | (Stream::Q2Partial, Batch::ItemSales(_))
                | (Stream::Q3Partial, Batch::StoreTpv(_))
                | (Stream::Q4Partial, Batch::Purchases(_))
                | (Stream::Q4Candidates, Batch::Candidates(_))
                | (Stream::Results(_), Batch::Results(_))
        )
    }
}

/// Partial Q2 sums of one (month, item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSales {
    pub month: YearMonth,
    pub item_id: u32,
    pub quantity: i64,
    pub subtotal: i64,
}

/// Partial Q3 sum of one (semester, store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTpv {
    pub half: YearHalf,
    pub store_id: u32,
    pub cents: i64,
}

/// Partial Q4 count of one (store, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchases {
    pub store_id: u32,
    pub user_id: u32,
    pub count: u64,
}

/// A Q4 candidate: one of the top users of a store among one partition's users, with the user's birthdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub store_id: u32,
    pub user_id: u32,
    pub count: u64,
    pub birthdate: Option<Date>,
}

/// The rows a data message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Batch {
    Transactions(Vec<Transaction>),
    TransactionItems(Vec<TransactionItem>),
    Users(Vec<User>),
    Stores(Vec<Store>),
    MenuItems(Vec<MenuItem>),
    ItemSales(Vec<ItemSales>),
    StoreTpv(Vec<StoreTpv>),
    Purchases(Vec<Purchases>),
    Candidates(Vec<Candidate>),
    Results(Vec<ResultRow>),
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Transactions(v) => v.len(),
            Batch::TransactionItems(v) => v.len(),
            Batch::Users(v) => v.len(),
            Batch::Stores(v) => v.len(),
            Batch::MenuItems(v) => v.len(),
            Batch::ItemSales(v) => v.len(),
            Batch::StoreTpv(v) => v.len(),
            Batch::Purchases(v) => v.len(),
            Batch::Candidates(v) => v.len(),
            Batch::Results(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other`'s rows, which must be of the same kind (an operator emitting twice on one stream).
    pub fn append(&mut self, other: Batch) {
        match (self, other) {
            (Batch::Transactions(a), Batch::Transactions(b)) => a.extend(b),
            (Batch::TransactionItems(a), Batch::TransactionItems(b)) => a.extend(b),
            (Batch::Users(a), Batch::Users(b)) => a.extend(b),
            (Batch::Stores(a), Batch::Stores(b)) => a.extend(b),
            (Batch::MenuItems(a), Batch::MenuItems(b)) => a.extend(b),
            (Batch::ItemSales(a), Batch::ItemSales(b)) => a.extend(b),
            (Batch::StoreTpv(a), Batch::StoreTpv(b)) => a.extend(b),
            (Batch::Purchases(a), Batch::Purchases(b)) => a.extend(b),
            (Batch::Candidates(a), Batch::Candidates(b)) => a.extend(b),
            (Batch::Results(a), Batch::Results(b)) => a.extend(b),
            (a, b) => panic!("appending {} rows to a batch of {}", b.kind_name(), a.kind_name()),
        }
    }

    /// What the rows are, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Batch::Transactions(_) => "transactions",
            Batch::TransactionItems(_) => "transaction items",
            Batch::Users(_) => "users",
            Batch::Stores(_) => "stores",
            Batch::MenuItems(_) => "menu items",
            Batch::ItemSales(_) => "item sales",
            Batch::StoreTpv(_) => "store TPV",
            Batch::Purchases(_) => "purchases",
            Batch::Candidates(_) => "candidates",
            Batch::Results(_) => "results",
        }
    }

    /// Splits the rows by their partition key into one batch per replica, each in the rows' order; `None` for
    /// rows that have no key.
    pub fn split_by_key(self, replicas: u16) -> Option<Vec<Batch>> {
        fn split<R: Keyed>(rows: Vec<R>, replicas: u16, wrap: fn(Vec<R>) -> Batch) -> Vec<Batch> {
            let mut parts: Vec<Vec<R>> = (0..replicas).map(|_| Vec::new()).collect();
            for row in rows {
                parts[usize::from(partition(row.key(), replicas))].push(row);
            }
            parts.into_iter().map(wrap).collect()
        }
        Some(match self {
            Batch::Users(rows) => split(rows, replicas, Batch::Users),
            Batch::ItemSales(rows) => split(rows, replicas, Batch::ItemSales),
            Batch::StoreTpv(rows) => split(rows, replicas, Batch::StoreTpv),
            Batch::Purchases(rows) => split(rows, replicas, Batch::Purchases),
            Batch::Candidates(rows) => split(rows, replicas, Batch::Candidates),
            #[cfg(feature = "example-query")]
            Batch::Transactions(rows) => split(rows, replicas, Batch::Transactions),
            #[cfg(not(feature = "example-query"))]
            Batch::Transactions(_) => return None,
            Batch::TransactionItems(_) | Batch::Stores(_) | Batch::MenuItems(_) | Batch::Results(_) => return None,
        })
    }
}

/// Rows spread by key: the key names the replica that owns the row, and with it every row it must meet there.
pub trait Keyed {
    fn key(&self) -> u64;
}

/// A user lives with its purchases (Q4's join): by user id.
impl Keyed for User {
    fn key(&self) -> u64 {
        self.user_id.into()
    }
}

/// Q2 is ranked per month: one replica owns each month.
impl Keyed for ItemSales {
    fn key(&self) -> u64 {
        self.month.0.into()
    }
}

/// Q3 sums per (semester, store): by store.
impl Keyed for StoreTpv {
    fn key(&self) -> u64 {
        self.store_id.into()
    }
}

/// Q4 counts per (store, user) where the user's birthdate is: by user id, as [`User`].
impl Keyed for Purchases {
    fn key(&self) -> u64 {
        self.user_id.into()
    }
}

/// The tests' example query counts per store: by store.
#[cfg(feature = "example-query")]
impl Keyed for Transaction {
    fn key(&self) -> u64 {
        self.store_id.into()
    }
}

/// Q4's final top 3 is per store: by store.
impl Keyed for Candidate {
    fn key(&self) -> u64 {
        self.store_id.into()
    }
}
