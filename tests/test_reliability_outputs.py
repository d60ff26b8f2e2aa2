

def test_a_killed_synths_staging_folder_is_removed_by_the_next_synth(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "synth"
    staging = tmp_path / f".tmp-{dead.pid}-0123abcd-synth"  # what a kill -9 during synth leaves beside OUT_DIR
    (staging / "BraTS2021_00000").mkdir(parents=True)
    other = tmp_path / f".tmp-{dead.pid}-0123abcd-another"  # some other output's: not synth's to remove
    other.mkdir()
    assert _invoke("synth", out, "--layout", "brats2021", "--cases", "1", "--shape", "16,16,16").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, "synth"])
