import pytest

from broker.storage import paths
from protocol.errors import InvalidTopicError

BAD_NAMES = ["", ".", "..", "a/b", "../x", "x" * 250, "a b", "ä", "a\x00b", "/abs", "a\\b", None, 5]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_topic_names_are_refused(name):
    with pytest.raises(InvalidTopicError):
        paths.validate_topic(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_no_path_is_built_from_an_invalid_name(tmp_path, name):
    with pytest.raises(InvalidTopicError):
        paths.partition_dir(tmp_path, name, 0)
    with pytest.raises(InvalidTopicError):
        paths.metadata_file(tmp_path, name)


@pytest.mark.parametrize("name", ["a", "A.b_c-1", "x" * 249, "...", "_", "-", "__topics__"])
def test_valid_topic_names(tmp_path, name):
    assert paths.validate_topic(name) == name
    directory = paths.partition_dir(tmp_path, name, 3)
    assert directory.parent == tmp_path
    assert paths.parse_partition_dir(directory) == (name, 3)
    assert paths.metadata_topic(paths.metadata_file(tmp_path, name)) == name


def test_segment_names_sort_by_offset(tmp_path):
    names = [paths.log_file(tmp_path, o).name for o in (0, 9, 10, 123456789012)]
    assert names == sorted(names)
    assert names[0] == "00000000000000000000.log"
    assert paths.parse_segment_file(paths.index_file(tmp_path, 42)) == (42, "index")
    assert paths.parse_segment_file(paths.timeindex_file(tmp_path, 42)) == (42, "timeindex")
    assert paths.parse_segment_file(tmp_path / "junk.log") is None


def test_special_names_never_parse_as_partitions(tmp_path):
    assert paths.parse_partition_dir(paths.topics_dir(tmp_path)) is None
    doomed = paths.deletion_dir(tmp_path, tmp_path / "t-0")
    assert paths.is_deletion_dir(doomed)
    assert paths.parse_partition_dir(doomed) is None
    assert paths.parse_partition_dir(tmp_path / "no-partition-") is None


def test_long_names_fit_their_suffixes(tmp_path):
    directory = paths.partition_dir(tmp_path, "x" * 249, 9999)
    assert len(paths.deletion_dir(tmp_path, directory).name) <= paths.NAME_MAX
    meta = paths.metadata_file(tmp_path, "x" * 249)
    assert len(paths.temp_file(meta).name) <= paths.NAME_MAX
    assert paths.is_temp_file(paths.temp_file(meta))
