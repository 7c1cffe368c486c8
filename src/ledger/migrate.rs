//! `x402d ledger migrate`: copies every record between the embedded file and a
//! team's PostgreSQL database, exactly (same ids, states and fields), then reads
//! the copy back and compares it with the source, and the target's per-window
//! totals with ones recomputed from the records. A target that already holds
//! payments is refused unless `replace` is given. Run it with the daemon stopped
//! (the embedded file is locked while one runs).

use super::postgres::{self, Postgres};
use super::*;
use redb::TableDefinition;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub records: usize,
    /// Per-window total rows compared (PostgreSQL side).
    pub totals: usize,
    pub from: String,
    pub to: String,
}

fn ledger_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ledger.redb")
}

/// The embedded ledger of `state_dir` → the database at `url`. The records are
/// owned by this state dir's instance id, so the daemon that uses this state
/// dir with `backend = "postgres"` recovers its own open ones.
pub async fn to_postgres(
    state_dir: &Path,
    url: &str,
    tz: TimeZone,
    replace: bool,
) -> Result<Migrated, LedgerError> {
    let path = ledger_path(state_dir);
    if !path.exists() {
        return Err(LedgerError::Storage(format!(
            "no embedded ledger at {}",
            path.display()
        )));
    }
    let records = {
        let db = embedded::open_offline(&path)?;
        embedded::read_all(&db)?
    };
    let instance = postgres::instance_id(state_dir)?;
    let pg = Postgres::writer_for(url, tz.clone(), instance.clone()).await?;
    if !replace && pg.count().await? > 0 {
        return Err(LedgerError::Storage(format!(
            "{} already holds payments; pass --replace to overwrite them",
            pg.location()
        )));
    }
    let owned: Vec<(Payment, String)> = records
        .iter()
        .map(|p| (p.clone(), instance.clone()))
        .collect();
    pg.load(&owned, replace).await?;
    // Read back and compare, record by record and total by total.
    let back: Vec<Payment> = pg
        .all_with_instance()
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    if back != records {
        return Err(LedgerError::Storage(
            "the copy in PostgreSQL differs from the embedded ledger".into(),
        ));
    }
    let stored = pg.stored_totals().await?;
    let expected = postgres::totals_of(&records, &tz);
    if stored != expected {
        return Err(LedgerError::Storage(
            "the totals recomputed in PostgreSQL differ from the records".into(),
        ));
    }
    Ok(Migrated {
        records: records.len(),
        totals: stored.len(),
        from: path.display().to_string(),
        to: pg.location(),
    })
}

/// The database at `url` → the embedded ledger of `state_dir`.
pub async fn to_redb(
    state_dir: &Path,
    url: &str,
    tz: TimeZone,
    replace: bool,
) -> Result<Migrated, LedgerError> {
    let pg = Postgres::reader(url, tz.clone()).await?;
    let records = pg.all().await?;
    let path = ledger_path(state_dir);
    std::fs::create_dir_all(state_dir).map_err(storage)?;
    let db = if path.exists() {
        let db = embedded::open_offline(&path)?;
        let n = embedded::read_all(&db)?.len();
        if n > 0 && !replace {
            return Err(LedgerError::Storage(format!(
                "{} already holds {n} payments; pass --replace to overwrite them",
                path.display()
            )));
        }
        db
    } else {
        redb::Database::create(&path).map_err(storage)?
    };
    let wtx = db.begin_write().map_err(storage)?;
    {
        // Drop and recreate: a replaced file keeps nothing of its old records.
        wtx.delete_table(embedded::PAYMENTS).map_err(storage)?;
        let mut table = wtx.open_table(embedded::PAYMENTS).map_err(storage)?;
        for p in &records {
            let bytes = serde_json::to_vec(p).map_err(storage)?;
            table.insert(p.id, bytes.as_slice()).map_err(storage)?;
        }
        let mut meta = wtx.open_table(META).map_err(storage)?;
        let next = records.iter().map(|p| p.id + 1).max().unwrap_or(1);
        meta.insert("next_id", next).map_err(storage)?;
    }
    wtx.commit().map_err(storage)?;
    let back = embedded::read_all(&db)?;
    if back != records {
        return Err(LedgerError::Storage(
            "the copy in the embedded ledger differs from PostgreSQL".into(),
        ));
    }
    // The embedded store recomputes its totals from the records at open; check
    // the database's stored totals agree with the same records.
    let stored = pg.stored_totals().await?;
    let expected = postgres::totals_of(&records, &pg.timezone());
    if stored != expected {
        return Err(LedgerError::Storage(
            "the database's stored totals differ from its records (run the migration again after `x402d serve` re-keys them)".into(),
        ));
    }
    Ok(Migrated {
        records: records.len(),
        totals: stored.len(),
        from: pg.location(),
        to: path.display().to_string(),
    })
}
