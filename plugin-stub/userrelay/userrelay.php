<?php
/**
 * Plugin Name:       UserRelay
 * Description:       Keeps this site's users in step with partner sites through a UserRelay relay: reports user changes to the relay and applies the changes it delivers.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      7.4
 * Author:            UserRelay
 * License:           GPL-2.0-or-later
 * Text Domain:       userrelay
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

define( 'USERRELAY_PLUGIN_VERSION', '0.1.0' );
define( 'USERRELAY_PLUGIN_FILE', __FILE__ );
define( 'USERRELAY_PLUGIN_DIR', __DIR__ );

require_once __DIR__ . '/includes/class-userrelay-facts.php';
require_once __DIR__ . '/includes/class-userrelay-profile.php';
require_once __DIR__ . '/includes/class-userrelay-protected-meta.php';
require_once __DIR__ . '/includes/class-userrelay-privileges.php';
require_once __DIR__ . '/includes/class-userrelay-settings.php';
require_once __DIR__ . '/includes/class-userrelay-signature.php';
require_once __DIR__ . '/includes/class-userrelay-replay-guard.php';
require_once __DIR__ . '/includes/class-userrelay-relay-trust.php';
require_once __DIR__ . '/includes/class-userrelay-relay-client.php';
require_once __DIR__ . '/includes/class-userrelay-outbox.php';
require_once __DIR__ . '/includes/class-userrelay-loopback-kick.php';
require_once __DIR__ . '/includes/class-userrelay-hooks.php';
require_once __DIR__ . '/includes/class-userrelay-credential-hooks.php';
require_once __DIR__ . '/includes/class-userrelay-network.php';
require_once __DIR__ . '/includes/class-userrelay-versions.php';
require_once __DIR__ . '/includes/class-userrelay-stored-versions.php';
require_once __DIR__ . '/includes/class-userrelay-bookkeeping-meta.php';
require_once __DIR__ . '/includes/class-userrelay-meta-values.php';
require_once __DIR__ . '/includes/class-userrelay-modified.php';
require_once __DIR__ . '/includes/class-userrelay-event-versions.php';
require_once __DIR__ . '/includes/class-userrelay-snapshot.php';
require_once __DIR__ . '/includes/class-userrelay-digests.php';
require_once __DIR__ . '/includes/class-userrelay-directory.php';
require_once __DIR__ . '/includes/class-userrelay-passwords.php';
require_once __DIR__ . '/includes/class-userrelay-developer-hooks.php';
require_once __DIR__ . '/includes/class-userrelay-apply-exception.php';
require_once __DIR__ . '/includes/class-userrelay-delivery-checks.php';
require_once __DIR__ . '/includes/class-userrelay-user-match.php';
require_once __DIR__ . '/includes/class-userrelay-user-writer.php';
require_once __DIR__ . '/includes/class-userrelay-meta-writer.php';
require_once __DIR__ . '/includes/class-userrelay-event-changes.php';
require_once __DIR__ . '/includes/class-userrelay-applier.php';
require_once __DIR__ . '/includes/class-userrelay-rest.php';
require_once __DIR__ . '/includes/class-userrelay-connection-test.php';
require_once __DIR__ . '/includes/class-userrelay-admin-blogs.php';
require_once __DIR__ . '/includes/class-userrelay-relay-view.php';
require_once __DIR__ . '/includes/class-userrelay-admin.php';
require_once __DIR__ . '/includes/class-userrelay-users-screen.php';
require_once __DIR__ . '/includes/class-userrelay-user-panel.php';
require_once __DIR__ . '/includes/class-userrelay-plugin.php';

register_activation_hook( __FILE__, array( 'UserRelay_Plugin', 'activate' ) );
register_deactivation_hook( __FILE__, array( 'UserRelay_Plugin', 'deactivate' ) );

UserRelay_Plugin::boot();
