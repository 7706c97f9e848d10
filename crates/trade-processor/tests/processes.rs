//! End-to-end tests with real `trade-processor` processes (issue 6).
//!
//! Two `trade-processor` binaries host the sharded order books; the rest of the cluster runs
//! in this process through the libraries: a seed node playing lighthouse, traders in load
//! mode and pricing. The trade-processors are `kill -9`ed and restarted (same addresses,
//! same data), and the tests prove that:
//!
//! - traders' orders lead to matches in the journal, and pricing turns every match into a
//!   price (its checkpoint has applied every trade id of every book, through the journal);
//! - killed while traders are sending, no order a trader considers confirmed is missing from
//!   the journal, and no order is placed twice (re-sends of orders a book already took are
//!   recognised after recovery);
//! - after the restart trading resumes (new confirmations);
//! - once trading stops, the books answered through sharding equal the books rebuilt from the
//!   journal alone, and after a second `kill -9` and restart they are exactly the same: the
//!   same resting orders with the same remaining quantities in the same order of arrival,
//!   trade count and duplicate window (compared as `BookSnapshot`s).
//!
//! The first test runs on the embedded SQLite journal (one file shared by every process), the
//! second on MongoDB: `MONGO_CONNECTION_STR` when set (scripts/test.sh starts SecantusDB),
//! else a SecantusDB of its own (refused under CI), with a database of its own per run.
//!
//! On MongoDB a process killed in the middle of a journal write leaves its transaction open on
//! the server (for `transactionLifetimeLimitSeconds`, 60 s); the journal kills that session
//! once its lease lapses (`MongoConfig::abandon_after`, 5 s; see the `persistence-mongodb`
//! docs, "Abandoned transactions"), so the book it was writing resumes after about 5 s, and
//! the test allows 15 s more after the first kill.
//!
//! Children log warnings to a temporary folder (the last lines are in failure messages);
//! `RUST_LOG` sets the level for them and for the in-process nodes.

mod support;

#[path = "../../persistence-mongodb/tests/common/mod.rs"]
mod mongo;

use std::collections::HashMap;
use std::time::Instant;

use domain::Ticker;
use support::{Backend, Cluster, Hosting, Setup, book_difference, eventually, with_database};

/// Orders confirmed before the first kill, at least.
const WARM_UP_ORDERS: u64 = 300;
/// New confirmations that show trading resumed after the restart.
const RESUMED_ORDERS: u64 = 200;

struct Scenario {
    setup: Setup,
    label: &'static str,
    /// Seconds added to the deadlines after the kill during trading: how long the backend
    /// may keep a killed writer's write in the way (see the MongoDB test).
    write_held_after_kill: u64,
}

/// Prints how long each phase took (shown by `--nocapture`, or by nextest on failure).
struct Phases {
    start: Instant,
    label: &'static str,
}

impl Phases {
    fn done(&self, what: &str) {
        eprintln!(
            "[{}] {:>6.1} s  {what}",
            self.label,
            self.start.elapsed().as_secs_f64()
        );
    }
}

async fn kill_restart_and_compare(scenario: Scenario) {
    let phases = Phases {
        start: Instant::now(),
        label: scenario.label,
    };
    let mut c = Cluster::start(scenario.setup).await;
    phases.done("cluster Up: seed, 2 trade-processor processes, pricing, traders");

    // Orders flow until every book has matches in the journal.
    let warm = eventually(
        60,
        "confirmed orders and matches in every book",
        || c.context(),
        || async {
            let s = c.stats().await;
            if s.confirmed < WARM_UP_ORDERS {
                return None;
            }
            let journal = c.journal().await;
            journal.values().all(|(b, _)| b.trades() > 0).then_some(s)
        },
    )
    .await;
    assert_eq!(warm.rejected, 0, "the books rejected orders: {warm:?}");
    phases.done(&format!(
        "{} orders confirmed, matches in every book",
        warm.confirmed
    ));

    // (a) kill -9 both trade-processors while the traders keep sending, at a moment when
    // orders are on their way (sent and not yet confirmed), if one comes within 5 s.
    let in_flight = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let s = c.stats().await;
            if s.pending > 0 {
                return s.pending;
            }
        }
    })
    .await
    .unwrap_or(0);
    let old = c.kill_trade_processors();
    let at_kill = c.stats().await;
    let checked = c
        .assert_confirmed_orders_journaled("right after the first kill -9")
        .await;
    phases.done(&format!(
        "kill -9 both ({in_flight} orders unconfirmed just before); all {checked} confirmed orders are in the journal"
    ));
    c.restart_trade_processors(&old).await;
    phases.done("both restarted and Up");
    let restarted = Instant::now();
    let resumed = eventually(
        60 + scenario.write_held_after_kill,
        "new confirmations after the restart",
        || c.context(),
        || async {
            let s = c.stats().await;
            (s.confirmed >= at_kill.confirmed + RESUMED_ORDERS).then_some(s)
        },
    )
    .await;
    phases.done(&format!(
        "trading resumed {:.1} s after the restart: {} confirmed ({} re-sent, {} confirmed again as duplicates)",
        restarted.elapsed().as_secs_f64(),
        resumed.confirmed,
        resumed.resent,
        resumed.duplicates
    ));

    // (b) Stop trading and let every order be confirmed.
    c.traders.stop_trading();
    let stats = c
        .wait_nothing_pending(60 + scenario.write_held_after_kill)
        .await;
    assert_eq!(stats.rejected, 0, "the books rejected orders: {stats:?}");
    let checked = c
        .assert_confirmed_orders_journaled("after trading stopped")
        .await;
    assert_eq!(
        checked as u64, stats.confirmed,
        "the desk lists every confirmed order"
    );
    phases.done(&format!(
        "trading stopped; all {checked} confirmed orders are in the journal"
    ));

    // The live books are what the journal says they are.
    let journal = c.journal().await;
    let before = c.live_books().await;
    let mut resting = 0;
    for (t, live) in &before {
        let from_journal = journal[t].0.snapshot();
        if let Some(d) = book_difference(live, &from_journal) {
            panic!("{t}: the live book (left) differs from its journal (right): {d}");
        }
        assert!(live.trades > 0, "{t}: no match");
        resting += live.bids.len() + live.asks.len();
    }
    phases.done(&format!(
        "{} live books equal their journal ({resting} resting orders)",
        before.len()
    ));

    // Every match reached pricing: each aggregator's checkpoint has applied every trade id,
    // and its journal stream has advanced.
    let trades: HashMap<Ticker, u64> = before.iter().map(|(t, b)| (*t, b.trades)).collect();
    for (&t, &n) in &trades {
        eventually(
            60,
            &format!("pricing of {t} to apply all {n} matches"),
            || c.context(),
            || async {
                let p = c.price_checkpoint(t).await?;
                let price = p.aggregate().current()?;
                (p.last_trade_id() == n && p.offset() > 0 && price.price > 0.0).then_some(())
            },
        )
        .await;
    }
    phases.done("pricing has a price from every match of every ticker");

    // kill -9 again, restart, and the books are exactly as they were.
    let old = c.kill_trade_processors();
    c.restart_trade_processors(&old).await;
    phases.done("second kill -9; both restarted and Up");
    let after = c.live_books().await;
    for ((t, b), (_, a)) in before.iter().zip(&after) {
        if let Some(d) = book_difference(b, a) {
            panic!(
                "{t}: the book before the kill (left) differs from the recovered one (right): {d}"
            );
        }
    }
    phases.done("every recovered book equals its snapshot from before the kill");
    c.shutdown().await;
}

fn tickers(list: &str) -> Vec<Ticker> {
    Ticker::parse_list(list).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_books_survive_kill_9_of_both_trade_processors() {
    let data = tempfile::Builder::new()
        .prefix("trade-processor-e2e")
        .tempdir()
        .unwrap();
    kill_restart_and_compare(Scenario {
        setup: Setup {
            backend: Backend::Sqlite(data.path().to_path_buf()),
            tickers: tickers("MSFT,AAPL,GOOG,TSLA"),
            orders_per_second: 300,
            child_log_filter: None,
        },
        label: "sqlite",
        write_held_after_kill: 0,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_books_survive_kill_9_of_both_trade_processors() {
    let server = tokio::task::spawn_blocking(mongo::connection_string)
        .await
        .unwrap();
    let uri = with_database(&server, &mongo::unique_db("trade_processor_e2e"));
    kill_restart_and_compare(Scenario {
        setup: Setup {
            backend: Backend::Mongo(uri),
            tickers: tickers("MSFT,AMZN"),
            orders_per_second: 200,
            child_log_filter: None,
        },
        label: "mongodb",
        // A kill -9 in the middle of a journal write leaves its transaction open on the
        // server (closing the connection does not end it), and every write of that book
        // conflicts with it until the next writer kills the abandoned session, once its
        // lease has lapsed (5 s), plus the traders' re-send back-off.
        write_held_after_kill: 15,
    })
    .await;
}

/// Single hosting through restarts: one trade-processor is `kill -9`ed and started again at
/// once at the same address, under load, ten times (alternating between the two). The new
/// incarnation joins while its predecessor is still a member; sharding must not let the two,
/// or the surviving node and the new incarnation, host a book at the same time. Checked from
/// the processes' own logs: no journal write was rejected, and no two incarnations' hostings
/// of a book overlap in time (the region logs each entity's start and stop). Nothing
/// confirmed is lost and nothing is placed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trade_processor_restarted_at_once_ten_times_never_hosts_a_book_twice() {
    const RESTARTS: usize = 10;
    let (_data, phases, mut c) = start_restarts("restarts").await;
    for round in 0..RESTARTS {
        let i = round % 2;
        let old = std::collections::HashSet::from([c.uid_of(i)]);
        let before = c.stats().await.confirmed;
        c.processes[i].kill9();
        c.processes[i].restart();
        c.wait_trade_processors_up(&old).await;
        // Every book is hosted again (it answers), trading goes on, and on every other
        // round the books are spread over both nodes again before the next kill, so that
        // both a kill during the hand-back and a kill after it are exercised.
        c.live_books().await;
        let confirmed = trading_resumed(&c, before).await;
        if round % 2 == 1 {
            books_on_both(&c).await;
        }
        phases.done(&format!(
            "restart {}: trade-processor-{} killed, restarted at once, Up; {confirmed} confirmed",
            round + 1,
            i + 1,
        ));
    }
    finish_restarts(c, &phases, RESTARTS, "after ten restarts").await;
}

/// Single hosting through graceful restarts, as a rolling update does them: SIGTERM one
/// trade-processor (it hands its books off, leaves and exits), start it again at the same
/// address, wait until it hosts books again, and go on with the other one, six times under
/// load. The node that runs the shard coordinator leaves too, so the coordinator moves in the
/// middle of hand-offs. Same checks as above: no rejected write, no overlapping hostings,
/// nothing lost or placed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_restarts_under_load_never_host_a_book_twice() {
    const RESTARTS: usize = 6;
    let (_data, phases, mut c) = start_restarts("rolling").await;
    for round in 0..RESTARTS {
        let i = round % 2;
        let old = std::collections::HashSet::from([c.uid_of(i)]);
        let before = c.stats().await.confirmed;
        let t = Instant::now();
        let status = c.processes[i].terminate(40);
        let took = t.elapsed().as_secs_f64();
        c.processes[i].restart();
        c.wait_trade_processors_up(&old).await;
        c.live_books().await;
        books_on_both(&c).await;
        let confirmed = trading_resumed(&c, before).await;
        phases.done(&format!(
            "restart {}: trade-processor-{} exited ({status}) {took:.1} s after SIGTERM, restarted, books on both; {confirmed} confirmed",
            round + 1,
            i + 1,
        ));
    }
    finish_restarts(c, &phases, RESTARTS, "after the graceful restarts").await;
}

/// The cluster of the restart tests: SQLite, all 28 books at 3,000 orders/s, the regions'
/// entity starts and stops in the trade-processors' logs; returns once orders are confirmed.
async fn start_restarts(label: &'static str) -> (tempfile::TempDir, Phases, Cluster) {
    let data = tempfile::Builder::new()
        .prefix(&format!("trade-processor-{label}"))
        .tempdir()
        .unwrap();
    let phases = Phases {
        start: Instant::now(),
        label,
    };
    let c = Cluster::start(Setup {
        backend: Backend::Sqlite(data.path().to_path_buf()),
        tickers: tickers(&domain::DEFAULT_TICKERS.join(",")),
        orders_per_second: 3_000,
        child_log_filter: Some("warn,cluster_sharding::region=debug".into()),
    })
    .await;
    eventually(
        60,
        "confirmed orders before the first restart",
        || c.context(),
        || async { (c.stats().await.confirmed >= WARM_UP_ORDERS).then_some(()) },
    )
    .await;
    phases.done("cluster Up and trading");
    (data, phases, c)
}

/// Waits for new confirmations after a restart; returns the confirmed count.
async fn trading_resumed(c: &Cluster, before: u64) -> u64 {
    eventually(
        60,
        "new confirmations after the restart",
        || c.context(),
        || async {
            let s = c.stats().await;
            (s.confirmed >= before + RESUMED_ORDERS).then_some(s.confirmed)
        },
    )
    .await
}

/// Waits until both trade-processors host books.
async fn books_on_both(c: &Cluster) {
    eventually(
        60,
        "books on both trade-processors",
        || c.context(),
        || async {
            let stats = c.books.cluster_stats().await.ok()?;
            (stats.regions.iter().filter(|r| r.shards > 0).count() == 2).then_some(())
        },
    )
    .await;
}

/// Stops trading and checks the restart tests' invariants: every order confirmed, nothing
/// lost or placed twice, single hosting throughout.
async fn finish_restarts(c: Cluster, phases: &Phases, restarts: usize, when: &str) {
    c.traders.stop_trading();
    let stats = c.wait_nothing_pending(60).await;
    assert_eq!(stats.rejected, 0, "the books rejected orders: {stats:?}");
    let checked = c.assert_confirmed_orders_journaled(when).await;
    phases.done(&format!(
        "all {checked} confirmed orders are in the journal, each once"
    ));
    let hostings = assert_single_hosting(&c, restarts);
    phases.done(&format!(
        "no rejected write; {hostings} hostings of {} books, none overlapping",
        c.tickers.len()
    ));
    c.shutdown().await;
}

/// Asserts that no trade-processor's journal write was rejected and that no two
/// incarnations' hostings of a book overlap; returns the number of hostings.
fn assert_single_hosting(c: &Cluster, restarts: usize) -> usize {
    for p in &c.processes {
        let rejected = p.rejected_writes();
        assert!(
            rejected.is_empty(),
            "{} journal writes were rejected (two incarnations of a book wrote at once), e.g.:\n{}",
            rejected.len(),
            rejected[0]
        );
    }
    let hostings: Vec<Hosting> = c.processes.iter().flat_map(|p| p.hostings()).collect();
    // Each restart moves books: more hostings than books, or the log lines were not read.
    assert!(
        hostings.len() >= c.tickers.len() + restarts,
        "only {} entity hostings found in the logs",
        hostings.len()
    );
    for (n, a) in hostings.iter().enumerate() {
        for b in &hostings[n + 1..] {
            assert!(
                !a.overlaps(b),
                "a book was hosted twice at once: {a:?} and {b:?}"
            );
        }
    }
    hostings.len()
}

#[test]
fn the_database_of_a_connection_string_is_replaced() {
    assert_eq!(
        with_database("mongodb://127.0.0.1:1/?directConnection=true", "x"),
        "mongodb://127.0.0.1:1/x?directConnection=true"
    );
    assert_eq!(
        with_database("mongodb://a:1,b:2/akkaTrader?replicaSet=rs", "x"),
        "mongodb://a:1,b:2/x?replicaSet=rs"
    );
    assert_eq!(with_database("mongodb://h:1", "x"), "mongodb://h:1/x");
    assert_eq!(
        with_database("mongodb://h:1?w=1", "x"),
        "mongodb://h:1/x?w=1"
    );
}
