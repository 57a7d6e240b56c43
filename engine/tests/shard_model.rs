//! A whole shard, driven from a seed, against a model: several partitions
//! (some with time retention), concurrent appends acknowledged once written
//! (`acks=1`) or once flushed (`acks=all`), reads, DeleteRecords, time
//! passing (retention, `flush.ms`, recovery checkpoints and the cleaner run
//! as their intervals come), clean restarts, `kill -9` and power loss. It
//! runs on in-memory storage, whose crash undoes unsynced directory
//! operations too, and on a simulated clock, so a seed replays exactly
//! (`FJORD_MODEL_SEED`, printed on failure).
//!
//! Checked after every step: appends get consecutive offsets in the order
//! they were submitted; every read returns exactly the model's records from
//! the log start on; retention removes only records older than
//! `retention.ms` and never moves the log start backwards; a clean restart
//! or a `kill -9` loses nothing written; a power loss loses nothing
//! acknowledged as flushed and leaves the log a prefix of what was written.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{decode, leader_append, offsets, read_batches};
use fjord_engine::clock::{Clock, SimulatedClock};
use fjord_engine::config::LogConfig;
use fjord_engine::log::AppendInfo;
use fjord_engine::shard::{self, EngineConfig, Shard};
use fjord_engine::storage::memory::MemoryStorage;
use fjord_engine::testkit::{run_model_seeds, values_batch, Rng, SeedRuns};
use fjord_engine::{Offset, TimestampMs, TopicPartition};
use glommio::LocalExecutorBuilder;

const DEFAULTS: SeedRuns = SeedRuns {
    cases: 24,
    steps: 300,
};
const DATA_DIR: &str = "/data";
const PARTITIONS: i32 = 4;
/// The time retention of the even partitions; the odd ones keep everything.
const RETENTION_MS: i64 = 60_000;
/// How long background work the clock woke may take to run (it takes
/// microseconds; the bound only keeps a hang from lasting forever).
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// When the simulated time starts: late 2023, so record timestamps are real.
const START_MS: i64 = 1_700_000_000_000;

fn partition(index: i32) -> TopicPartition {
    TopicPartition::new("model", index)
}

/// Small segments, so appends roll them and retention has whole segments
/// to delete; time retention on the even partitions.
fn log_config(partition: &TopicPartition) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        retention_ms: if partition.partition % 2 == 0 {
            RETENTION_MS
        } else {
            -1
        },
        ..LogConfig::default()
    }
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        shards: 1,
        retention_check_interval: Duration::from_secs(10),
        flush_check_interval: Duration::from_secs(1),
        recovery_checkpoint_interval: Duration::from_secs(30),
        log_config_for: Arc::new(log_config),
        ..EngineConfig::new(DATA_DIR)
    }
}

#[derive(Clone, Debug)]
struct ModelBatch {
    base: Offset,
    values: Vec<Vec<u8>>,
    timestamp: TimestampMs,
}

impl ModelBatch {
    fn end(&self) -> Offset {
        Offset(self.base.0 + self.values.len() as i64)
    }
}

/// What one partition must hold.
#[derive(Clone, Debug)]
struct ModelPartition {
    /// The batches from the log start on, in offset order.
    batches: Vec<ModelBatch>,
    log_start: Offset,
    log_end: Offset,
    /// Every acknowledged append moves it to the log end; a restart brings
    /// back the checkpointed one.
    high_watermark: Offset,
    /// Everything below was acknowledged as flushed.
    acked_flushed: Offset,
}

impl ModelPartition {
    fn new() -> Self {
        Self {
            batches: Vec::new(),
            log_start: Offset::ZERO,
            log_end: Offset::ZERO,
            high_watermark: Offset::ZERO,
            acked_flushed: Offset::ZERO,
        }
    }

    fn is_batch_boundary(&self, offset: Offset) -> bool {
        offset == self.log_end || self.batches.iter().any(|batch| batch.base == offset)
    }

    /// Drops the batches wholly below `start`.
    fn move_start(&mut self, start: Offset) {
        self.log_start = self.log_start.max(start);
        let log_start = self.log_start;
        self.batches.retain(|batch| batch.end() > log_start);
    }

    /// Drops the batches at or past `end`, which must be a batch boundary.
    fn cut_to(&mut self, end: Offset) {
        self.batches.retain(|batch| batch.base < end);
        self.log_end = end;
        self.acked_flushed = self.acked_flushed.min(end);
        self.high_watermark = self.high_watermark.min(end);
        self.log_start = self.log_start.min(end);
    }
}

/// How a shard's life ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// SIGTERM: partitions closed cleanly.
    Clean,
    /// `kill -9`: the kernel keeps every write and name.
    Kill,
    /// The machine loses power.
    PowerLoss,
}

struct Simulation {
    seed: u64,
    rng: Rng,
    clock: SimulatedClock,
    storage: MemoryStorage,
    model: Vec<ModelPartition>,
    step: u64,
    life: u64,
}

impl Simulation {
    fn context(&self) -> String {
        format!(
            "seed {} life {} step {} (t+{} ms)",
            self.seed,
            self.life,
            self.step,
            self.clock.now().0 - START_MS
        )
    }

    /// Runs lives until `steps` steps have run.
    async fn run(mut self, steps: u64) {
        while self.step < steps {
            let storage = self.storage.clone();
            let clock: Rc<dyn Clock> = Rc::new(self.clock.clone());
            let budget = steps - self.step;
            let (next_storage, this) =
                shard::run_alone(engine_config(), storage, clock, |shard| async move {
                    self.live(&shard, budget).await
                })
                .await
                .expect("the shard starts");
            self = this;
            // The old shard's sleeping background tasks stay on the old
            // clock; the restarted shard gets its own, a little later.
            self.clock = SimulatedClock::new(TimestampMs(
                self.clock.now().0 + self.rng.between(0, 5_000) as i64,
            ));
            self.storage = next_storage;
            self.life += 1;
        }
    }

    /// One life of the shard: checks what it recovered, runs steps, and
    /// returns the storage the next life starts from.
    async fn live(
        mut self,
        shard: &Rc<Shard<MemoryStorage>>,
        budget: u64,
    ) -> (MemoryStorage, Self) {
        self.settle(shard).await;
        self.check_recovered(shard).await;
        let length = self.rng.between(1, budget.min(80));
        for _ in 0..length {
            self.step += 1;
            match self.rng.below(100) {
                0..=49 => self.append(shard).await,
                50..=69 => {
                    let index = self.rng.index(self.model.len());
                    self.check_reads(shard, index).await;
                }
                70..=74 => self.delete_records(shard).await,
                _ => self.pass_time(shard).await,
            }
        }
        let ending = *self
            .rng
            .pick(&[Ending::Clean, Ending::Kill, Ending::PowerLoss]);
        self.step += 1;
        let next = match ending {
            // run_alone closes the partitions once this returns.
            Ending::Clean => self.storage.clone(),
            Ending::Kill => self.storage.copy(),
            Ending::PowerLoss => self.storage.after_crash(),
        };
        self.after_ending(ending);
        (next, self)
    }

    /// What the model expects to survive `ending`.
    fn after_ending(&mut self, ending: Ending) {
        if let Ending::PowerLoss = ending {
            // Which unflushed writes survive is the storage's choice;
            // check_recovered cuts the model to what did.
            return;
        }
        for partition in &mut self.model {
            // Clean: closed with a flush; kill: the kernel has every write.
            partition.acked_flushed = partition.log_end;
        }
    }

    /// Creates the partitions in the first life; afterwards checks that each
    /// reopened holding at least what was acknowledged, at most what was
    /// written, and exactly the model's records.
    async fn check_recovered(&mut self, shard: &Rc<Shard<MemoryStorage>>) {
        if self.model.is_empty() {
            for index in 0..PARTITIONS {
                let partition = partition(index);
                let config = log_config(&partition);
                shard
                    .create_partition(partition, config)
                    .await
                    .unwrap_or_else(|error| panic!("{}: create: {error}", self.context()));
                self.model.push(ModelPartition::new());
            }
        }
        for index in 0..self.model.len() {
            let context = self.context();
            let found = offsets(shard, &partition(index as i32)).await;
            let model = &mut self.model[index];
            assert!(
                found.log_end >= model.acked_flushed && found.log_end <= model.log_end,
                "{context}: partition {index} recovered to {found:?}; acknowledged as flushed \
                 {:?}, written {:?}",
                model.acked_flushed,
                model.log_end
            );
            // A power loss may take unflushed records above the log start
            // with it; the log then starts at its new end.
            assert!(
                found.log_end <= model.log_start || model.is_batch_boundary(found.log_end),
                "{context}: partition {index} recovered to {found:?}, inside a batch; model \
                 start {:?} end {:?} flushed {:?}",
                model.log_start,
                model.log_end,
                model.acked_flushed
            );
            model.cut_to(found.log_end);
            assert!(
                found.log_start >= model.log_start,
                "{context}: partition {index}'s log start went back from {:?} to {:?}",
                model.log_start,
                found.log_start
            );
            model.move_start(found.log_start);
            assert!(
                found.high_watermark >= model.log_start.min(model.high_watermark)
                    && found.high_watermark <= model.high_watermark,
                "{context}: partition {index}: high watermark {:?} recovered; model {:?}",
                found.high_watermark,
                model.high_watermark
            );
            model.high_watermark = found.high_watermark;
            // Everything that survived is flushed now.
            model.acked_flushed = found.log_end;
            self.check_reads(shard, index).await;
        }
    }

    /// One to three appends of one to three batches, submitted in order
    /// and awaited in a random order; some acknowledged once flushed.
    async fn append(&mut self, shard: &Rc<Shard<MemoryStorage>>) {
        let index = self.rng.index(self.model.len());
        let partition = partition(index as i32);
        let timestamp = self.clock.now();
        let mut pending = Vec::new();
        for _ in 0..self.rng.between(1, 3) {
            let flush = self.rng.chance(1, 3);
            let batches: Vec<Vec<Vec<u8>>> = (0..self.rng.between(1, 3))
                .map(|_| {
                    (0..self.rng.between(1, 4))
                        .map(|_| {
                            let len = self.rng.between(1, 400) as usize;
                            self.rng.bytes(len)
                        })
                        .collect()
                })
                .collect();
            let mut request = leader_append(&partition, Vec::new(), flush);
            request.batches = batches
                .iter()
                .map(|values| values_batch(values, timestamp, None).into())
                .collect();
            pending.push((shard.submit_append(request).await, batches, flush));
        }
        let mut answers: Vec<Option<AppendInfo>> = vec![None; pending.len()];
        let mut order: Vec<usize> = (0..pending.len()).collect();
        for slot in (1..order.len()).rev() {
            order.swap(slot, self.rng.index(slot + 1));
        }
        let mut futures: Vec<_> = pending
            .iter_mut()
            .map(|(answer, ..)| Some(answer))
            .collect();
        for &which in &order {
            let answer = futures[which].take().expect("each answer awaited once");
            let info = answer
                .await
                .unwrap_or_else(|error| panic!("{}: append: {error}", self.context()));
            answers[which] = Some(info);
        }
        let context = self.context();
        let model = &mut self.model[index];
        for ((_, batches, flush), info) in pending.iter().zip(answers) {
            let info = info.expect("every answer arrived");
            assert_eq!(
                info.base_offset, model.log_end,
                "{context}: partition {index}: appends must land in submission order"
            );
            for values in batches {
                let batch = ModelBatch {
                    base: model.log_end,
                    values: values.clone(),
                    timestamp,
                };
                model.log_end = batch.end();
                model.batches.push(batch);
            }
            assert_eq!(info.last_offset.next(), model.log_end, "{context}");
            if *flush {
                model.acked_flushed = model.log_end;
            }
            model.high_watermark = model.log_end;
        }
    }

    /// Reads the whole partition with a random read size and compares it
    /// with the model.
    async fn check_reads(&mut self, shard: &Rc<Shard<MemoryStorage>>, index: usize) {
        let context = self.context();
        let partition = partition(index as i32);
        let found = offsets(shard, &partition).await;
        let model = &self.model[index];
        assert_eq!(
            (found.log_start, found.high_watermark, found.log_end),
            (model.log_start, model.high_watermark, model.log_end),
            "{context}: partition {index}'s offsets (start, high watermark, end)"
        );
        let max_bytes = self.rng.between(100, 10_000) as usize;
        let batches = read_batches(
            shard,
            &partition,
            found.log_start..found.log_end,
            max_bytes,
            false,
        )
        .await;
        let expected: Vec<&ModelBatch> = model.batches.iter().collect();
        assert_eq!(
            batches.len(),
            expected.len(),
            "{context}: partition {index}: batches read from {:?}",
            found.log_start
        );
        for (read, expected) in batches.iter().zip(expected) {
            let (header, records) = decode(read);
            assert_eq!(
                header.base_offset, expected.base,
                "{context}: partition {index}"
            );
            let values: Vec<Vec<u8>> = records
                .into_iter()
                .map(|record| record.value.expect("model records have values"))
                .collect();
            assert_eq!(
                values, expected.values,
                "{context}: partition {index}: batch at {:?}",
                expected.base
            );
        }
    }

    /// DeleteRecords up to a random offset at most the high watermark.
    async fn delete_records(&mut self, shard: &Rc<Shard<MemoryStorage>>) {
        let index = self.rng.index(self.model.len());
        let model = &self.model[index];
        let target = self
            .rng
            .offset_between(model.log_start, model.high_watermark.max(model.log_start));
        let start = shard
            .delete_records(partition(index as i32), target)
            .await
            .unwrap_or_else(|error| panic!("{}: delete records: {error}", self.context()));
        assert_eq!(start, target.max(model.log_start), "{}", self.context());
        self.model[index].move_start(start);
    }

    /// Moves the clock on and lets the background work it wakes run; then
    /// checks what retention removed.
    async fn pass_time(&mut self, shard: &Rc<Shard<MemoryStorage>>) {
        let step = Duration::from_millis(self.rng.between(1, RETENTION_MS as u64 / 2));
        self.clock.advance(step);
        self.settle(shard).await;
        let horizon = self.clock.now().0 - RETENTION_MS;
        for index in 0..self.model.len() {
            let context = self.context();
            let found = offsets(shard, &partition(index as i32)).await;
            let model = &mut self.model[index];
            assert!(
                found.log_start == model.log_start
                    || (found.log_start > model.log_start
                        && model.is_batch_boundary(found.log_start)),
                "{context}: partition {index}: log start {:?} after retention; model {:?}",
                found.log_start,
                model.log_start
            );
            if found.log_start > model.log_start {
                assert!(
                    index % 2 == 0,
                    "{context}: partition {index} has no retention but lost records"
                );
                for removed in model
                    .batches
                    .iter()
                    .filter(|batch| batch.end() <= found.log_start)
                {
                    assert!(
                        removed.timestamp.0 < horizon,
                        "{context}: partition {index}: retention removed the batch at {:?}, \
                         {} ms old",
                        removed.base,
                        self.clock.now().0 - removed.timestamp.0
                    );
                }
            }
            model.move_start(found.log_start);
        }
    }

    /// Waits until every sleeper the clock woke has run and slept again
    /// and no background operation is in flight. Glommio picks the next
    /// task queue by the real time each has run, so this waits on a real
    /// timer (the background queue runs while this one sleeps), up to a
    /// deadline.
    async fn settle(&self, shard: &Rc<Shard<MemoryStorage>>) {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            let woken_pending = self
                .clock
                .next_deadline()
                .is_some_and(|deadline| deadline <= self.clock.now());
            if !woken_pending && shard.background_idle() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the shard's background work did not settle: next deadline {:?}, idle {}",
                self.context(),
                self.clock.next_deadline(),
                shard.background_idle()
            );
            glommio::timer::sleep(Duration::from_micros(100)).await;
        }
    }
}

fn run_seed(seed: u64, steps: u64) {
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let simulation = Simulation {
                seed,
                rng: Rng::new(seed),
                clock: SimulatedClock::new(TimestampMs(START_MS)),
                storage: MemoryStorage::new(seed),
                model: Vec::new(),
                step: 0,
                life: 0,
            };
            simulation.run(steps).await;
        })
        .expect("an executor starts")
        .join()
        .expect("the simulation's executor does not panic");
}

#[test]
fn a_shard_matches_the_model_through_time_restarts_and_crashes() {
    run_model_seeds(DEFAULTS, run_seed);
}
