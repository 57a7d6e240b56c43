"""kcat (librdkafka's command-line client) against fjord: metadata listing,
produce with keys and headers, and consume from chosen offsets."""

import json
import subprocess

KCAT_DEADLINE_SECONDS = 30
# Fields separated by a byte that appears in no test key or value.
FORMAT = "%p\\x1f%o\\x1f%k\\x1f%s\\x1f%h\\n"


def kcat(broker, *arguments, stdin=None):
    result = subprocess.run(
        ["kcat", "-b", broker.bootstrap, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=KCAT_DEADLINE_SECONDS,
    )
    assert result.returncode == 0, f"kcat {arguments} failed: {result.stderr}"
    return result.stdout


def consume(broker, topic, *arguments):
    """Every record from the chosen offset to the end, as (partition, offset,
    key, value, headers) tuples."""
    out = kcat(broker, "-C", "-t", topic, "-e", "-q", "-f", FORMAT, *arguments)
    return [tuple(line.split("\x1f")) for line in out.splitlines()]


def produce_lines(broker, topic, lines, *arguments):
    kcat(broker, "-P", "-t", topic, "-p", "0", *arguments, stdin="".join(f"{line}\n" for line in lines))


def test_kcat_metadata_lists_the_broker_and_created_topics(broker, topic_name):
    """`kcat -L` must show fjord's advertised address as a broker and a topic
    created through auto-create with its partition led by that broker; guards
    against Metadata answering with a wrong host/port, no brokers, or a topic
    without leaders."""
    produce_lines(broker, topic_name, ["first"])

    metadata = json.loads(kcat(broker, "-L", "-J"))

    brokers = [(entry["id"], entry["name"]) for entry in metadata["brokers"]]
    assert brokers == [(1, broker.bootstrap)]
    topics = {entry["topic"]: entry for entry in metadata["topics"]}
    assert topic_name in topics
    partitions = topics[topic_name]["partitions"]
    assert [p["partition"] for p in partitions] == [0]
    assert partitions[0]["leader"] == 1
    assert "error" not in topics[topic_name]


def test_kcat_round_trip_keeps_keys_values_and_headers_exactly(broker, topic_name):
    """Records produced with `-K:` keys and `-H` headers come back from
    `kcat -C` byte for byte, at consecutive offsets from 0; guards against
    losing or reordering headers, mixing up keys and values, or offsets that
    skip."""
    lines = ["k1:v1", "k2:value two", "k3:", "k4:v:with:colons"]
    produce_lines(broker, topic_name, lines, "-K:", "-H", "h1=a", "-H", "trace=xyz")

    records = consume(broker, topic_name, "-o", "beginning")

    headers = "h1=a,trace=xyz"
    assert records == [
        ("0", "0", "k1", "v1", headers),
        ("0", "1", "k2", "value two", headers),
        ("0", "2", "k3", "", headers),
        ("0", "3", "k4", "v:with:colons", headers),
    ]


def test_kcat_consumes_from_absolute_relative_and_end_offsets(broker, topic_name):
    """`-o 3` starts at offset 3, `-o -2` at two before the end and `-o end`
    yields nothing; guards against Fetch ignoring the fetch offset or
    ListOffsets reporting a wrong log end."""
    produce_lines(broker, topic_name, [f"value-{number}" for number in range(6)])

    def values(*arguments):
        return [(offset, value) for _, offset, _, value, _ in consume(broker, topic_name, *arguments)]

    assert values("-o", "3") == [("3", "value-3"), ("4", "value-4"), ("5", "value-5")]
    assert values("-o", "-2") == [("4", "value-4"), ("5", "value-5")]
    assert values("-o", "end") == []
    assert values("-o", "beginning", "-c", "2") == [("0", "value-0"), ("1", "value-1")]
