-- A registry.db written by the SQLite store as it was before schema_version existed (schema 1:
-- meta.schema_version = 1), dumped with sqlite3 iterdump(). tests/registry/test_store_schema.py restores it
-- and checks that opening it migrates it in place, losing nothing. Do not regenerate it with newer code.
BEGIN TRANSACTION;
CREATE TABLE alias_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    target TEXT NOT NULL,
    old_record_id TEXT,
    new_record_id TEXT,
    at TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
INSERT INTO "alias_history" VALUES(1,'model','edgenet','production','jetson-orin-nano',NULL,'84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','2026-11-30T16:40:43.393+00:00','ann@ws1','first');
INSERT INTO "alias_history" VALUES(2,'model','edgenet','production','jetson-orin-nano','84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7','2026-11-30T16:40:43.393+00:00','bob@ws2','v2 passed');
INSERT INTO "alias_history" VALUES(3,'model','edgenet','staging','',NULL,'0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7','2026-11-30T16:40:43.393+00:00','ann@ws1','');
CREATE TABLE aliases (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    record_id TEXT NOT NULL REFERENCES records(id),
    PRIMARY KEY (kind, name, alias, target)
);
INSERT INTO "aliases" VALUES('model','edgenet','production','jetson-orin-nano','0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7');
INSERT INTO "aliases" VALUES('model','edgenet','staging','','0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7');
CREATE TABLE blob_refs (
    record_id TEXT NOT NULL REFERENCES records(id),
    sha256 TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (record_id, sha256, role)
);
INSERT INTO "blob_refs" VALUES('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','manifest');
INSERT INTO "blob_refs" VALUES('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','shard');
INSERT INTO "blob_refs" VALUES('cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc','cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc','manifest');
INSERT INTO "blob_refs" VALUES('84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee','weights');
INSERT INTO "blob_refs" VALUES('0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7','ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff','weights');
CREATE TABLE image_index (
    transform TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    shard_sha256 TEXT NOT NULL,
    row INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    phash INTEGER NOT NULL,
    pixel_sha256 TEXT NOT NULL,
    PRIMARY KEY (transform, content_sha256)
);
INSERT INTO "image_index" VALUES('t128','0000000000000000000000000000000000000000000000000000000000000000','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',0,48,48,-9223372036854775808,'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd');
INSERT INTO "image_index" VALUES('t128','0000000000000000000000000000000000000000000000000000000000000001','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',1,48,48,-9223372036854775807,'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd');
INSERT INTO "image_index" VALUES('t128','0000000000000000000000000000000000000000000000000000000000000002','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',2,48,48,-9223372036854775806,'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd');
CREATE TABLE links (
    record_id TEXT NOT NULL REFERENCES records(id),
    input_id TEXT NOT NULL REFERENCES records(id),
    role TEXT NOT NULL,
    PRIMARY KEY (record_id, input_id, role)
);
INSERT INTO "links" VALUES('cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','train_data');
INSERT INTO "links" VALUES('84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9','run');
INSERT INTO "links" VALUES('84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','train_data');
INSERT INTO "links" VALUES('0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7','cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9','run');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE records (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    toolchain_version TEXT NOT NULL
);
INSERT INTO "records" VALUES('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','dataset','highway','{"manifest":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}','2026-11-30T16:40:43.391+00:00','root@vm','0.1.0');
INSERT INTO "records" VALUES('cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc','dataset','highway','{"manifest":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}','2026-11-30T16:40:43.392+00:00','root@vm','0.1.0');
INSERT INTO "records" VALUES('cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9','run','edgenet','{"dataset":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","lr":0.1}','2026-11-30T16:40:43.392+00:00','root@vm','0.1.0');
INSERT INTO "records" VALUES('84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','model','edgenet','{"run":"cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9","weights":"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"}','2026-11-30T16:40:43.392+00:00','root@vm','0.1.0');
INSERT INTO "records" VALUES('0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7','model','edgenet','{"run":"cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9","weights":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"}','2026-11-30T16:40:43.392+00:00','root@vm','0.1.0');
CREATE TABLE versions (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    record_id TEXT NOT NULL REFERENCES records(id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name, number),
    UNIQUE (kind, name, record_id)
);
INSERT INTO "versions" VALUES('dataset','highway',1,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','2026-11-30T16:40:43.392+00:00');
INSERT INTO "versions" VALUES('dataset','highway',2,'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc','2026-11-30T16:40:43.392+00:00');
INSERT INTO "versions" VALUES('model','edgenet',1,'84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c','2026-11-30T16:40:43.392+00:00');
INSERT INTO "versions" VALUES('model','edgenet',2,'0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7','2026-11-30T16:40:43.392+00:00');
CREATE INDEX records_kind_name ON records(kind, name);
CREATE TRIGGER records_immutable BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'registry records are immutable'); END;
CREATE TRIGGER records_undeletable BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'registry records are immutable'); END;
CREATE INDEX links_input ON links(input_id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alias_history',3);
COMMIT;
