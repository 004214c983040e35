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
        return migrator
    }
}
