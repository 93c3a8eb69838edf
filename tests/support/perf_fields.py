"""`perf script -s` script printing every tracepoint sample with raw field values (test oracle).

Run by tests/test_perfdata.py inside perf's embedded Python: one tab-separated line per sample,
event cpu time tid comm, then the non-common fields in name order.
"""


def trace_unhandled(event_name, context, event_fields_dict, perf_sample_dict):
    s = perf_sample_dict["sample"]
    vals = [event_fields_dict[k] for k in sorted(event_fields_dict) if not k.startswith("common_")]
    print(event_name.replace("__", ":", 1), s["cpu"], s["time"], s["tid"], perf_sample_dict.get("comm"), *vals,
          sep="\t")
