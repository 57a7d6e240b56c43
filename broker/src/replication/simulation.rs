//! The deterministic simulation of partition replication (issue #17):
//! brokers' partition layers and the controller's decisions, on in-memory
//! logs, a simulated network and a simulated clock, with crashes,
//! restarts, pauses, network partitions, delays and drops chosen by a
//! seed, and the invariants of [`oracle`] checked after every event. It
//! drives the code the brokers and the controller run where that code is
//! pure: [`super::leader::LeaderState`] for every leader decision,
//! [`super::leader::diverging_epoch`] and
//! [`super::leader::truncation_offset`] for truncation, the engine's
//! leader-epoch cache, the controller's sessions and elections, and
//! [`crate::metadata::MetadataImage::apply`] for every commit; the
//! asynchronous glue around them (role loop, fetcher, Fetch and Produce
//! handlers) is mirrored in [`world`], step for step.
//!
//! Guards against: an acknowledged acks=all record lost (from the
//! committed log, from an ISR member, by a failover), the committed prefix
//! rewritten, replicas that disagree below their high watermarks, a
//! leader's high watermark going back, two leaders in one epoch, a leader
//! from outside the ISR, an empty ISR, and a cluster that does not heal
//! once the faults stop (a follower that never catches up, a partition
//! left offline). With unclean leader election enabled (its own family),
//! a leader from outside the ISR is allowed only when no ISR member is
//! eligible, marked recovering (KIP-704) with an ISR that does not grow
//! until it reports recovered; it may lose only the acknowledged records
//! it lacked, and nothing acknowledged in its epochs.
//!
//! Each family of seeds is a test. `FJORD_SIM_SEED=<n>` runs seed `n`
//! alone with its trace on stderr (`cargo test -p fjord-broker --lib
//! replication::simulation::<family> -- --nocapture`);
//! `FJORD_SIM_SEEDS=<n>` sets how many seeds each family runs. A failing
//! seed prints the command that replays it; failures found are kept below
//! as named tests.

mod controller;
mod oracle;
mod replica_log;
mod world;

use fjord_engine::testkit::Rng;
use world::{Shape, Stats, World};

/// Three brokers, every partition on all three, `min.insync.replicas=2`:
/// the cluster.
const THREE_BROKERS: Shape = Shape {
    brokers: (3, 3),
    partitions: (1, 2),
    replication_factor: 3,
    min_insync: 2,
    unclean_leader_election: false,
};

/// Kafka's default `min.insync.replicas=1`: a lone leader commits.
const MIN_INSYNC_ONE: Shape = Shape {
    brokers: (3, 3),
    partitions: (1, 2),
    replication_factor: 3,
    min_insync: 1,
    unclean_leader_election: false,
};

/// More brokers than replicas: partitions led and followed by different
/// sets of brokers.
const FOUR_OR_FIVE_BROKERS: Shape = Shape {
    brokers: (4, 5),
    partitions: (2, 3),
    replication_factor: 3,
    min_insync: 2,
    unclean_leader_election: false,
};

/// Unclean leader election enabled, with Kafka's default
/// `min.insync.replicas=1`: a partition whose whole ISR is down is led by
/// a live replica outside it, which may lack acknowledged records.
const UNCLEAN: Shape = Shape {
    brokers: (3, 3),
    partitions: (1, 2),
    replication_factor: 3,
    min_insync: 1,
    unclean_leader_election: true,
};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number"))
    })
}

/// Runs `seed` of `shape`; a failure names the seed and how to replay it.
fn run_seed(family: &str, shape: &Shape, seed: u64, tracing: bool) -> Stats {
    let replay = format!(
        "replay: FJORD_SIM_SEED={seed} cargo test -p fjord-broker --lib \
         replication::simulation::{family} -- --nocapture"
    );
    let outcome = std::panic::catch_unwind(|| World::new(shape, Rng::new(seed), tracing).run());
    match outcome {
        Ok(Ok(stats)) => stats,
        Ok(Err(failure)) => panic!(
            "{family}: seed {seed} failed at {} ms: {}\n{replay}",
            failure.at_ms, failure.violation
        ),
        Err(panic) => {
            eprintln!("{family}: seed {seed} panicked\n{replay}");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Runs the family's seeds (or the one `FJORD_SIM_SEED` names, traced)
/// and checks that together they did what the simulation is for.
fn run_family(family: &str, shape: &Shape, seeds: u64) {
    if let Some(seed) = env_u64("FJORD_SIM_SEED") {
        let stats = run_seed(family, shape, seed, true);
        eprintln!("{family}: seed {seed}: {stats:?}");
        return;
    }
    let seeds = env_u64("FJORD_SIM_SEEDS").unwrap_or(seeds);
    let mut total = Stats::default();
    for seed in 0..seeds {
        total += run_seed(family, shape, seed, false);
    }
    eprintln!("{family}: {seeds} seeds: {total:?}");
    assert_exercised(&total, seeds);
    if shape.unclean_leader_election {
        // Unclean elections happened and lost acknowledged records, so the
        // invariants that allow it were put to work.
        assert!(total.unclean_elections as u64 > seeds / 20, "{total:?}");
        assert!(total.acked_batches_lost as u64 > seeds / 20, "{total:?}");
    }
}

/// The seeds did what the simulation is for: records acknowledged,
/// failovers, truncations, ISR changes, crashes, leaderships given back.
fn assert_exercised(stats: &Stats, seeds: u64) {
    assert!(stats.acked_batches as u64 > 30 * seeds, "{stats:?}");
    assert!(stats.elections as u64 > seeds, "{stats:?}");
    assert!(stats.truncations as u64 > seeds / 4, "{stats:?}");
    assert!(stats.isr_shrinks as u64 > seeds, "{stats:?}");
    assert!(stats.isr_expansions as u64 > seeds, "{stats:?}");
    assert!(stats.crashes as u64 > seeds, "{stats:?}");
    assert!(stats.rebalances as u64 > seeds / 4, "{stats:?}");
}

#[test]
fn three_brokers_min_insync_two() {
    run_family("three_brokers_min_insync_two", &THREE_BROKERS, 1_200);
}

#[test]
fn three_brokers_min_insync_one() {
    run_family("three_brokers_min_insync_one", &MIN_INSYNC_ONE, 600);
}

#[test]
fn four_or_five_brokers() {
    run_family("four_or_five_brokers", &FOUR_OR_FIVE_BROKERS, 600);
}

#[test]
fn unclean_leader_election() {
    run_family("unclean_leader_election", &UNCLEAN, 300);
}

// Failures the simulation found, each kept as the seed that showed it;
// each seed failed with the fix undone and passes with it.

/// A broker took a leader epoch at its log end and was fenced before
/// writing in it; following the new leader, which never had that epoch,
/// it was told its previous epoch ends at its own log end, truncated
/// there, which did nothing, and asked again forever, never rejoining the
/// ISR. Fixed in the engine's `truncate_to` (Kafka's `truncateTo` drops
/// the epochs from the log end even when it cuts nothing).
#[test]
fn seed_100_a_follower_with_an_epoch_it_never_wrote_in_catches_up() {
    run_seed("three_brokers_min_insync_two", &THREE_BROKERS, 100, false);
}

/// A follower cut off from its leader but not from the controller stayed
/// in the ISR forever: `LeaderState::propose` dropped it for lag and added
/// it straight back (its log end is at the high watermark, the lowest of
/// the ISR's), and proposed the ISR the controller had, which left the
/// proposal pending for good. Fixed in `LeaderState::propose`.
#[test]
fn seed_296_a_follower_that_stops_fetching_leaves_the_isr() {
    run_seed("three_brokers_min_insync_two", &THREE_BROKERS, 296, false);
}

/// With `min.insync.replicas=1` and the image's ISR the leader alone, an
/// append moved the high watermark to the log end while the leader's
/// proposal adding a follower was in flight: an acks=all record was
/// acknowledged that the member the controller then added lacked. The
/// simulation takes the high watermark from the leader's state (its
/// maximal ISR) after every append; fjord's `leader_append` must too.
#[test]
fn seed_35_an_isr_expansion_in_flight_holds_the_high_watermark() {
    run_seed("three_brokers_min_insync_one", &MIN_INSYNC_ONE, 35, false);
}

/// An AlterPartition adding a follower timed out at the leader, which
/// forgot it and computed the high watermark without the follower, while
/// the controller had committed it: acks=all records were acknowledged
/// that an ISR member lacked. The simulation keeps a proposal in flight
/// until an answer that says it was not applied or a new partition epoch
/// (Kafka's rule), resending it on a timeout; fjord's
/// `propose_isr_changes` must too.
#[test]
fn seed_1328_an_alter_partition_without_answer_stays_in_flight() {
    run_seed("four_or_five_brokers", &FOUR_OR_FIVE_BROKERS, 1_328, false);
}

/// A heartbeat of a killed broker's previous process, delayed in the
/// network, was answered to the new process, which took the answer for
/// its own and served before registering. The simulation's answers go to
/// the process that asked, as on a real connection.
#[test]
fn seed_935_an_answer_goes_to_the_process_that_asked() {
    run_seed("three_brokers_min_insync_two", &THREE_BROKERS, 935, false);
}

/// A leader acknowledged acks=1 records unflushed; its follower fetched
/// them (the high watermark passed them) and was fenced out of the ISR;
/// the leader lost power and, the ISR's last member, led again without
/// them, writing other records at their offsets. That is the acks=1
/// contract (a committed record survives while one ISR member holds it),
/// not a loss of acknowledged acks=all records: the oracle cuts such
/// records from its committed log rather than call it a rewrite.
#[test]
fn seed_744_acks_one_records_a_power_loss_took_leave_the_committed_log() {
    run_seed("three_brokers_min_insync_one", &MIN_INSYNC_ONE, 744, false);
}

/// A replica elected uncleanly while paused still fetched from the leader
/// it deposed, which did not know yet, before it took the leadership: the
/// batches it gained in between are on the branch that lives on. The
/// oracle took the branch from the replica's log at the election, cut the
/// committed log there and compared the replicas holding more only below
/// the cut until they truncated there, which those on the living branch
/// never do: once one of them led, its acknowledged records never reached
/// the committed log. The branch, and the cuts, now restart from the
/// partition's first leader since the election.
#[test]
fn seed_610_an_uncleanly_elected_replica_may_still_fetch_before_it_leads() {
    run_seed("unclean_leader_election", &UNCLEAN, 610, false);
}

/// A leader paused through its deposition by an unclean election resumed
/// as a leader, appended and acknowledged at once (its ISR itself alone,
/// `min.insync.replicas=1`), with a high watermark over records the new
/// leader never had. Kafka allows that loss; the oracle compared the
/// deposed leader below its high watermark with the committed log and
/// called it a disagreement. A replica on a deposed branch is now compared
/// only below it until it truncates it away.
#[test]
fn seed_48_a_deposed_leader_acknowledges_on_its_own_branch() {
    run_seed("unclean_leader_election", &UNCLEAN, 48, false);
}
