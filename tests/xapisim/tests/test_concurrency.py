"""Many clients at once: no deadlock, no lost update, consistent relations."""

import threading
import time


def test_parallel_clients_snapshot_and_destroy(xapisim_tiny):
    errors = []
    vm_names = ["tiny-running", "tiny-halted"]
    made = []

    def worker(index):
        try:
            x = xapisim_tiny.session().xenapi
            vm = x.VM.get_by_name_label(vm_names[index % 2])[0]
            for round_ in range(5):
                snap = x.VM.snapshot(vm, "parallel %d/%d" % (index, round_))
                x.VM.add_to_other_config(snap, "worker", str(index))
                x.VM.get_all_records_where('field "is_a_snapshot"="true"')
                vdis = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(snap)
                        if x.VBD.get_type(v) == "Disk"]
                x.VM.destroy(snap)
                for vdi in vdis:
                    x.VDI.destroy(vdi)
                x.VM.add_tags(vm, "w%d" % index)
            made.append(index)
        except Exception as exc:  # reported below with the worker's index
            errors.append((index, repr(exc)))

    vdis_before = set(xapisim_tiny.session().xenapi.VDI.get_all())
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "deadlock: workers still running"
    assert errors == []
    assert sorted(made) == list(range(6))
    assert time.monotonic() - started < 120
    x = xapisim_tiny.session().xenapi
    for name in vm_names:
        vm = x.VM.get_by_name_label(name)[0]
        tags = x.VM.get_tags(vm)
        assert {"w%d" % i for i in range(6) if vm_names[i % 2] == name} <= set(tags)
        assert [s for s in x.VM.get_snapshots(vm)
                if "parallel" in x.VM.get_name_label(s)] == []
        for vbd in x.VM.get_VBDs(vm):
            assert x.VBD.get_VM(vbd) == vm
    assert set(x.VDI.get_all()) == vdis_before  # every snapshot disk made was destroyed
