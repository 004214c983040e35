import GRDB

/// The database schema as a list of migrations. Never edit a shipped migration: append a new one,
/// so every existing state dir is upgraded in place by the next daemon start.
enum StateSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-vm-and-state") { db in
            try db.execute(sql: """
                CREATE TABLE vm (
                    uuid TEXT PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL UNIQUE,
                    definition TEXT NOT NULL,
                    autostart BOOLEAN NOT NULL DEFAULT 0,
                    created_at DATETIME NOT NULL,
                    updated_at DATETIME NOT NULL
                );
                CREATE TABLE vm_state (
                    uuid TEXT PRIMARY KEY NOT NULL REFERENCES vm(uuid) ON DELETE CASCADE,
                    state TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    pid INTEGER,
                    control_socket TEXT,
                    updated_at DATETIME NOT NULL
                );
                """)
        }
        // The daemon's process identity for each running VM: the pid alone can be reused once the
        // VM exits, its start time (clock ticks since boot) cannot. The status file is where
        // `vireo run --status-file` writes how it ended, for a daemon that is not its parent.
        migrator.registerMigration("v2-process-identity") { db in
            try db.execute(sql: """
                ALTER TABLE vm_state ADD COLUMN process_start_ticks INTEGER;
                ALTER TABLE vm_state ADD COLUMN status_file TEXT;
                """)
        }
        // Where `vireo save` last wrote each VM (canonical path): `vireo restore FILE` finds the VM
        // by it. NULL for a VM never saved.
        migrator.registerMigration("v3-saved-image") { db in
            try db.execute(sql: "ALTER TABLE vm_state ADD COLUMN saved_image TEXT")
        }
        // Storage pools (libvirt's model): each pool's definition (JSON), whether it is started,
        // and its autostart flag. Volumes are not stored: they are what the pool holds.
        migrator.registerMigration("v4-storage-pools") { db in
            try db.execute(sql: """
                CREATE TABLE pool (
                    name TEXT PRIMARY KEY NOT NULL,
                    definition TEXT NOT NULL,
                    active BOOLEAN NOT NULL DEFAULT 0,
                    autostart BOOLEAN NOT NULL DEFAULT 0,
                    created_at DATETIME NOT NULL
                );
                """)
        }
        return migrator
    }
}
