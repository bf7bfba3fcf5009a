//! A transaction spanning the Commander's tables: rows and the events that
//! describe them commit together or not at all.

use crate::{Result, Store, Tx};

/// An open transaction; dropped without [`StoreTx::commit`], it rolls back.
pub struct StoreTx {
    pub(crate) tx: Tx,
    store: Store,
    /// Statements sent inside, added to the store's count on commit.
    pub(crate) statements: u64,
}

impl Store {
    /// Starts a transaction (a writing one: see `begin_writing`).
    pub async fn begin(&self) -> Result<StoreTx> {
        Ok(StoreTx {
            tx: self.begin_writing().await?,
            store: self.clone(),
            statements: 1,
        })
    }
}

impl StoreTx {
    /// Commits everything done in the transaction.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        self.store.count_statements(self.statements + 1);
        Ok(())
    }
}
