#!/usr/bin/python3
"""A Strata client in Python, written from proto/ and docs/protocol.md alone.

Writes samples (NaN payloads, -0, infinities, ids across the whole uint64 range) through the
write API, seals the window, reads it back through the read API in both encodings and checks
every timestamp and value bit for bit. Prints one JSON object; exits 0 when every check passed.

    examples/python/generate.sh                      # protoc: gen/{write,read,health}_pb2.py
    /usr/bin/python3 examples/python/strata_client.py --write 127.0.0.1:7401 --read 127.0.0.1:7402

Needs Debian's python3-grpcio and python3-protobuf (protobuf-compiler for generate.sh).
"""
import argparse
import json
import os
import random
import struct
import sys
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_messages(gen_dir):
    sys.path.insert(0, gen_dir)
    import health_pb2  # noqa: E402  (generated)
    import read_pb2  # noqa: E402
    import write_pb2  # noqa: E402
    return health_pb2, read_pb2, write_pb2


# CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as the blocks and run_crcs use.
CRC_TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    CRC_TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def u64s(data):
    return list(struct.unpack('<%dQ' % (len(data) // 8), data))


def method(channel, path, req_cls, res_cls, streaming=False):
    make = channel.unary_stream if streaming else channel.unary_unary
    return make(path, request_serializer=req_cls.SerializeToString, response_deserializer=res_cls.FromString)


def wait_serving(channel, health_pb2, service, deadline_s=60):
    check = method(channel, '/grpc.health.v1.Health/Check', health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    grpc.channel_ready_future(channel).result(timeout=deadline_s)
    for _ in range(deadline_s * 10):
        if check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)  # the aggregator recovers its WAL before it serves
    raise RuntimeError('%s is not SERVING' % service)


def read_retrying(call, deadline_s=60, max_delay_s=2.0):
    """Runs a Read, retrying while the gateway refuses it for a budget in use by other calls:
    RESOURCE_EXHAUSTED with the grpc-retry-pushback-ms trailer, after that many ms at first, then
    backing off (doubling, with jitter, up to max_delay_s) until deadline_s. A refusal without the
    trailer is a limit of the request itself and is raised at once. (A retry policy in grpcio's
    service config stops after 5 attempts and waits only the pushback each time: about half a
    second in all, which a busy gateway can outlast.)"""
    give_up = time.monotonic() + deadline_s
    attempt = 0
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            pushback = dict(err.trailing_metadata() or ()).get('grpc-retry-pushback-ms')
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or pushback is None or not pushback.isdigit():
                raise
            delay = min(max_delay_s, int(pushback) / 1000 * 2 ** attempt) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > give_up:
                raise
            time.sleep(delay)
            attempt += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--write', required=True, help='aggregator address host:port')
    ap.add_argument('--read', required=True, help='gateway address host:port')
    ap.add_argument('--tenant', default='python')
    ap.add_argument('--token', default=None, help='bearer token, when the tenants file requires one')
    ap.add_argument('--gen', default=os.path.join(HERE, 'gen'), help='directory of the generated *_pb2.py')
    args = ap.parse_args()
    health_pb2, read_pb2, write_pb2 = load_messages(args.gen)
    auth = [('authorization', 'Bearer ' + args.token)] if args.token else []

    wch = grpc.insecure_channel(args.write)
    rch = grpc.insecure_channel(args.read)
    wait_serving(wch, health_pb2, 'strata.write.v1.Writer')
    wait_serving(rch, health_pb2, 'strata.read.v1.Read')
    write = method(wch, '/strata.write.v1.Writer/Write', write_pb2.WriteRequest, write_pb2.WriteResponse)
    seal = method(wch, '/strata.write.v1.Writer/Seal', write_pb2.SealRequest, write_pb2.SealResponse)
    status = method(wch, '/strata.write.v1.Writer/Status', write_pb2.StatusRequest, write_pb2.StatusResponse)
    read = method(rch, '/strata.read.v1.Read/Read', read_pb2.ReadRequest, read_pb2.ReadResponse, streaming=True)

    # the layout, from Status: shard count, window length, accepted timestamps (inclusive)
    st = status(write_pb2.StatusRequest(), metadata=auth, timeout=10)
    num_shards, bd = st.num_shards, st.block_duration_ms
    window = ((st.min_timestamp_ms + st.max_timestamp_ms) // 2 // bd) * bd  # well inside the range

    # samples: value bits chosen to catch any lossy path
    bits = [0x7FF0000000000002, 0x8000000000000000, 0x7FF0000000000000, 0x0000000000000001, 0x400921FB54442D18, 0xFFF8000000000001]
    ids = [0, 1, 12345678901234567890, 2 ** 64 - 1]
    want = {}
    for k, sid in enumerate(ids):
        ts = [window + 60000 * i + k for i in range(len(bits))]
        vs = bits[k:] + bits[:k]
        want[sid] = (ts, vs)
    # and one long series of pseudo-random bits: its run is larger than a small response message,
    # so RUNS sends it in several fragments
    x, noisy = 88172645463325252, []
    for _ in range(2000):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2 ** 64
        noisy.append(x & 0x7FEFFFFFFFFFFFFF)  # finite doubles
    want[7] = ([window + 5000 * i for i in range(len(noisy))], noisy)
    by_shard = {}
    for sid, (ts, vs) in want.items():
        by_shard.setdefault(sid % num_shards, []).append(
            write_pb2.SeriesSamples(id=sid, timestamps=struct.pack('<%dq' % len(ts), *ts), values=struct.pack('<%dQ' % len(vs), *vs)))
    written = 0
    for shard, series in sorted(by_shard.items()):
        md = [('x-strata-tenant', args.tenant), ('x-strata-shard', str(shard))] + auth
        written += write(write_pb2.WriteRequest(series=series), metadata=md, timeout=60).samples
    blocks = []
    for shard in sorted(by_shard):
        md = [('x-strata-tenant', args.tenant), ('x-strata-shard', str(shard))] + auth
        blocks += [b.key for b in seal(write_pb2.SealRequest(window_start_ms=window), metadata=md, timeout=600).blocks]

    def read_block(shard, sids, start, end, encoding, shards=None):
        req = read_pb2.ReadRequest(tenant=args.tenant, shard=shard, num_shards=shards or num_shards, window_start_ms=window,
                                   series_ids=struct.pack('<%dQ' % len(sids), *sids), start_ms=start, end_ms=end, encoding=encoding,
                                   runs_version=3)  # RUNS answers it takes (it decodes no run, it checks each run's CRC and count; docs/protocol.md, "Versions")
        md = [('x-strata-block', '%s/%d/%d' % (args.tenant, shard, window)), ('x-strata-tenant', args.tenant)] + auth
        return read_retrying(lambda: list(read(req, metadata=md, timeout=60)))

    checks = {}
    # RAW: decoded columns, only samples in the range; fragments of a series are adjacent
    got = {}
    for shard, series in by_shard.items():
        for m in read_block(shard, [s.id for s in series], window, window + bd, read_pb2.RAW):
            counts = struct.unpack('<%dI' % (len(m.sample_counts) // 4), m.sample_counts)
            ts = struct.unpack('<%dq' % (len(m.timestamps) // 8), m.timestamps)
            vs = u64s(m.values)
            at = 0
            for sid, n in zip(u64s(m.series_ids), counts):
                t0, v0 = got.setdefault(sid, ([], []))
                t0.extend(ts[at:at + n])
                v0.extend(vs[at:at + n])
                at += n
    checks['raw_bit_for_bit'] = all(got.get(sid) == (list(ts), list(vs)) for sid, (ts, vs) in want.items()) and len(got) == len(want)

    # RUNS: the stored runs in fragments; run_crcs is the CRC32C of the whole run, on every fragment
    runs, crcs, fragments = {}, {}, {}
    for shard, series in by_shard.items():
        for m in read_block(shard, [s.id for s in series], window, window + bd, read_pb2.RUNS):
            lengths = struct.unpack('<%dI' % (len(m.run_lengths) // 4), m.run_lengths)
            cs = struct.unpack('<%dI' % (len(m.run_crcs) // 4), m.run_crcs)
            at = 0
            for sid, n, c in zip(u64s(m.series_ids), lengths, cs):
                runs[sid] = runs.get(sid, b'') + m.runs[at:at + n]
                crcs.setdefault(sid, set()).add(c)
                fragments[sid] = fragments.get(sid, 0) + 1
                at += n
    checks['runs_crc_of_whole_run'] = sorted(runs) == sorted(want) and all(crcs[sid] == {crc32c(run)} for sid, run in runs.items())
    checks['runs_sample_count'] = all(runs[sid][1] == len(bits) for sid in ids)  # u8 encoding, uvarint count (< 128: one byte)

    # a range with no sample of a series leaves it out, in both encodings
    sid = ids[0]
    gap = (window + 60000 * (len(bits) - 1) + 1, window + bd)
    checks['no_sample_no_series'] = all(
        not any(m.series_ids for m in read_block(sid % num_shards, [sid], gap[0], gap[1], enc)) for enc in (read_pb2.RAW, read_pb2.RUNS))

    # a refusal carries its ERR_STRATA_* code in the strata-error-code trailer: series 1 is not
    # of shard 0 (with more than one shard)
    refused = None
    try:
        read_block(0, [1], window, window + bd, read_pb2.RAW)
    except grpc.RpcError as e:
        trailer = dict(e.trailing_metadata() or ())
        refused = {'code': e.code().name, 'strata_error_code': trailer.get('strata-error-code'), 'details': e.details()}

    out = {
        'num_shards': num_shards,
        'block_duration_ms': bd,
        'window': window,
        'written': written,
        'blocks': sorted(blocks),
        'checks': checks,
        'most_fragments_of_a_run': max(fragments.values()),
        'refused': refused,
    }
    print(json.dumps(out, sort_keys=True))
    return 0 if all(checks.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
