<?php
/**
 * Uninstall: drops both tables and deletes every option, transient, user meta key and cron
 * event the plugin made. Events still in the outbox are lost with it, by the admin's choice.
 *
 * @package UserRelay
 */

if ( ! defined( 'WP_UNINSTALL_PLUGIN' ) ) {
	exit;
}

global $wpdb;

// On a network every blog has its own tables, options and schedule (each is a site at the relay).
$userrelay_blogs = is_multisite() ? get_sites(
	array(
		'fields' => 'ids',
		'number' => 0,
	)
) : array( get_current_blog_id() );
foreach ( $userrelay_blogs as $userrelay_blog ) {
	if ( is_multisite() ) {
		switch_to_blog( (int) $userrelay_blog );
	}
	wp_clear_scheduled_hook( 'userrelay_flush' );
	$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->prefix}userrelay_outbox" );
	$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->prefix}userrelay_applied" );
	// Options: userrelay_url, _site, _key, _install_id, _flush_token, _status, _db_version, the
	// clock and tombstones; then the settings page's flash transients (userrelay_flash_{user id}).
	foreach ( array( 'userrelay_url', 'userrelay_site', 'userrelay_key', 'userrelay_install_id', 'userrelay_flush_token', 'userrelay_status', 'userrelay_db_version', 'userrelay_kick_at' ) as $userrelay_option ) {
		delete_option( $userrelay_option );
	}
	$wpdb->query(
		$wpdb->prepare(
			"DELETE FROM {$wpdb->options} WHERE option_name LIKE %s OR option_name LIKE %s OR option_name LIKE %s",
			$wpdb->esc_like( 'userrelay_' ) . '%',
			$wpdb->esc_like( '_transient_userrelay_' ) . '%',
			$wpdb->esc_like( '_transient_timeout_userrelay_' ) . '%'
		)
	);
	// The relay's trust anchor, learned into this blog's uploads (UserRelay_Relay_Trust).
	$userrelay_uploads = wp_upload_dir( null, false );
	$userrelay_folder  = trailingslashit( (string) $userrelay_uploads['basedir'] ) . 'userrelay';
	foreach ( (array) glob( $userrelay_folder . '/relay-ca-*.pem' ) as $userrelay_file ) {
		wp_delete_file( (string) $userrelay_file );
	}
	if ( is_dir( $userrelay_folder ) && array() === (array) glob( $userrelay_folder . '/*' ) ) {
		rmdir( $userrelay_folder ); // phpcs:ignore WordPress.WP.AlternativeFunctions.file_system_operations_rmdir -- our own empty folder.
	}
	if ( is_multisite() ) {
		restore_current_blog();
	}
}
$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->base_prefix}userrelay_seen" );
// On a network the settings are site options, one set per blog (UserRelay_Settings::option_name).
if ( is_multisite() ) {
	$wpdb->query( $wpdb->prepare( "DELETE FROM {$wpdb->sitemeta} WHERE meta_key LIKE %s", $wpdb->esc_like( 'userrelay_' ) . '%' ) );
}
// Our user meta (userrelay_modified) and any other userrelay_ key are ours by their prefix.
$wpdb->query( $wpdb->prepare( "DELETE FROM {$wpdb->usermeta} WHERE meta_key LIKE %s", $wpdb->esc_like( 'userrelay_' ) . '%' ) );
wp_cache_flush();
