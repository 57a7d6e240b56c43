/* A librdkafka consumer at its default fetch sizes (1 MiB per partition,
 * 50 MiB per fetch: what an unmodified client asks for) that reads a topic
 * from the beginning to the high watermarks it finds at start and prints
 * one JSON line: records, bytes (values and keys), seconds, MB/s (1e6).
 * The neutral client of catch-up-vs-tansu.sh: fjord-bench asks for what we
 * tell it to, kcat's older librdkafka cannot talk to Tansu, and a Python
 * consumer is the bottleneck at these rates.
 *
 * usage: rdkafka_catch_up BOOTSTRAP TOPIC */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PARTITIONS_MAX 1024

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what, const char *why) {
    fprintf(stderr, "%s: %s\n", what, why);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 3) fail("usage", "rdkafka_catch_up BOOTSTRAP TOPIC");
    char error[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], error, sizeof error) ||
        rd_kafka_conf_set(conf, "group.id", "rdkafka-catch-up", error, sizeof error) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", error, sizeof error))
        fail("config", error);
    rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
    if (!consumer) fail("consumer", error);

    const rd_kafka_metadata_t *metadata;
    rd_kafka_topic_t *topic = rd_kafka_topic_new(consumer, argv[2], NULL);
    if (rd_kafka_metadata(consumer, 0, topic, &metadata, 30000))
        fail("metadata", "no answer");
    if (metadata->topic_cnt != 1 || metadata->topics[0].err)
        fail("metadata", "no such topic");
    int partitions = metadata->topics[0].partition_cnt;
    if (partitions > PARTITIONS_MAX) fail("metadata", "too many partitions");
    int64_t ends[PARTITIONS_MAX];
    int left = 0;
    rd_kafka_topic_partition_list_t *assignment = rd_kafka_topic_partition_list_new(partitions);
    for (int i = 0; i < partitions; i++) {
        int32_t id = metadata->topics[0].partitions[i].id;
        int64_t low, high;
        if (id >= PARTITIONS_MAX ||
            rd_kafka_query_watermark_offsets(consumer, argv[2], id, &low, &high, 30000))
            fail("watermarks", argv[2]);
        ends[id] = high;
        if (high > low) {
            rd_kafka_topic_partition_list_add(assignment, argv[2], id)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
            left++;
        }
    }
    rd_kafka_metadata_destroy(metadata);
    rd_kafka_topic_destroy(topic);
    if (rd_kafka_assign(consumer, assignment)) fail("assign", argv[2]);
    rd_kafka_topic_partition_list_destroy(assignment);

    long long records = 0, bytes = 0;
    double started = now();
    while (left > 0) {
        rd_kafka_message_t *message = rd_kafka_consumer_poll(consumer, 1000);
        if (!message) continue;
        if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(message);
            continue;
        }
        if (message->err) fail("consume", rd_kafka_message_errstr(message));
        records++;
        bytes += message->len + message->key_len;
        if (message->offset + 1 == ends[message->partition]) left--;
        rd_kafka_message_destroy(message);
    }
    double seconds = now() - started;
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    printf("{\"records\": %lld, \"bytes\": %lld, \"seconds\": %.3f, "
           "\"megabytes_per_second\": %.1f}\n",
           records, bytes, seconds, bytes / seconds / 1e6);
    return 0;
}
