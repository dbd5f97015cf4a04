-- The schema create_all made before migrations (backend/db.py at commit e3a5e0a,
-- the last before runs.metrics_version): revision 0001, PostgreSQL.
CREATE TABLE datasets (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(200) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	num_images INTEGER NOT NULL,
	classes JSON NOT NULL,
	image_shapes JSON NOT NULL,
	warnings JSON NOT NULL,
	PRIMARY KEY (id)
);
CREATE TABLE runs (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(200) NOT NULL,
	dataset_id VARCHAR(32),
	class_names JSON NOT NULL,
	config JSON NOT NULL,
	status VARCHAR(16) NOT NULL,
	epochs_done INTEGER NOT NULL,
	error TEXT,
	resumed_at_epoch INTEGER,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	started_at TIMESTAMP WITH TIME ZONE,
	finished_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	FOREIGN KEY(dataset_id) REFERENCES datasets (id) ON DELETE SET NULL
);
CREATE INDEX ix_runs_status ON runs (status);
CREATE INDEX ix_runs_dataset_id ON runs (dataset_id);
CREATE TABLE batch_metrics (
	run_id VARCHAR(32) NOT NULL,
	step INTEGER NOT NULL,
	epoch FLOAT NOT NULL,
	values JSON NOT NULL,
	PRIMARY KEY (run_id, step),
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE TABLE epoch_metrics (
	run_id VARCHAR(32) NOT NULL,
	epoch INTEGER NOT NULL,
	values JSON NOT NULL,
	PRIMARY KEY (run_id, epoch),
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE TABLE evaluations (
	run_id VARCHAR(32) NOT NULL,
	weights VARCHAR(8) NOT NULL,
	epoch INTEGER NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	body JSON NOT NULL,
	PRIMARY KEY (run_id, weights),
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
